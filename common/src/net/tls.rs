//! TLS server configuration from PEM files (tokio-rustls with the ring provider).
//! Used for STARTTLS (RFC 3207), STLS (RFC 2595) and implicit-TLS listeners (RFC 8314).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;

/// Why the certificate or key could not be used; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// Builds a rustls server config (TLS 1.2 and 1.3, no client certificates) from a PEM
/// certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1; other
/// PEM blocks such as `EC PARAMETERS` are skipped).
///
/// # Errors
/// [`TlsError`] when a file is unreadable, holds no certificate or key, or the key does
/// not match the certificate; both files are read, so one error can name both.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let (certs, key) = match (load_certs(cert), load_key(key)) {
        (Ok(c), Ok(k)) => (c, k),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
        (Err(c), Err(k)) => return Err(TlsError(format!("{c}; {k}"))),
    };
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(format!("certificate/key: {e}")))?;
    Ok(Arc::new(config))
}

/// The certificate chain in the PEM file at `path`.
///
/// # Errors
/// [`TlsError`] naming the file when it cannot be read or holds no `CERTIFICATE` block.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError(format!("certificate {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("certificate {}: no CERTIFICATE block", path.display())));
    }
    Ok(certs)
}

/// The private key in the PEM file at `path`.
///
/// # Errors
/// [`TlsError`] naming the file when it cannot be read or holds no private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError(format!("key {}: {e}", path.display())))
}

/// [`load_server_config`] wrapped in an acceptor.
///
/// # Errors
/// As [`load_server_config`].
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    load_server_config(cert, key).map(TlsAcceptor::from)
}

/// Runs the server side of a TLS handshake on `io` with the acceptor's configuration,
/// giving up at `deadline`. The stream holds no buffer while the client is silent (see
/// [`super::tls_stream`]).
///
/// # Errors
/// Handshake failures, or `TimedOut`.
pub async fn handshake<IO>(
    acceptor: &TlsAcceptor,
    io: IO,
    deadline: tokio::time::Instant,
) -> std::io::Result<super::tls_stream::TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout_at(deadline, super::tls_stream::accept(acceptor.config().clone(), io))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timeout"))?
}
