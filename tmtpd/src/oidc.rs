//! OpenID Connect registration (spec/tmtp.md §12): the `id_token` a client got from one
//! of the configured providers is checked with `jsonwebtoken` (RS256) against the
//! provider's JWKS, loaded once at start (an `http://` or `https://` URL, or a file),
//! and its `iss`, `aud` and `exp` claims. Failures only go to the log: the client is told
//! `"authentication required"`.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use crate::config::Provider;

/// One RSA key of a JWKS (RFC 7517).
#[derive(Clone, Debug, Deserialize)]
pub struct Jwk {
    /// Key id.
    #[serde(default)]
    pub kid: String,
    /// Algorithm, when given.
    #[serde(default)]
    pub alg: String,
    /// Key type (`RSA`).
    #[serde(default)]
    pub kty: String,
    /// Modulus, base64url.
    #[serde(default)]
    pub n: String,
    /// Exponent, base64url (big-endian, RFC 7518 §6.3.1; mnm read it little-endian).
    #[serde(default)]
    pub e: String,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

/// The identity a valid token proves.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Subject.
    pub sub: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at (seconds), when given.
    #[serde(default)]
    pub iat: Option<i64>,
}

/// The providers with their keys.
#[derive(Clone, Debug, Default)]
pub struct Verifier {
    providers: Vec<(Provider, Vec<Jwk>)>,
}

async fn get(url: &str) -> anyhow::Result<Vec<u8>> {
    let uri: hyper::Uri = url.parse()?;
    let host = uri.host().ok_or_else(|| anyhow::anyhow!("no host in {url}"))?.to_owned();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let req = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, host.as_str())
        .body(Empty::<Bytes>::new())?;
    async fn exchange<IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static>(
        io: IO,
        req: hyper::Request<Empty<Bytes>>,
    ) -> anyhow::Result<Vec<u8>> {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        let resp = send.send_request(req).await?;
        anyhow::ensure!(resp.status().is_success(), "HTTP {}", resp.status());
        Ok(resp.into_body().collect().await?.to_bytes().to_vec())
    }
    if https {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let cfg = tokio_rustls::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(host.clone())?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp).await?;
        exchange(hyper_util::rt::TokioIo::new(tls), req).await
    } else {
        exchange(hyper_util::rt::TokioIo::new(tcp), req).await
    }
}

async fn load_keys(source: &str) -> anyhow::Result<Vec<Jwk>> {
    let body = if source.starts_with("http://") || source.starts_with("https://") {
        tokio::time::timeout(Duration::from_secs(10), get(source)).await??
    } else {
        tokio::fs::read(source).await?
    };
    Ok(serde_json::from_slice::<Jwks>(&body)?.keys)
}

impl Verifier {
    /// Loads every provider's keys; a provider whose keys cannot be loaded is logged and
    /// kept without keys (its tokens then fail, as in mnm).
    pub async fn load(providers: &[Provider]) -> Verifier {
        let mut out = Vec::new();
        for p in providers {
            let keys = match load_keys(&p.keys).await {
                Ok(k) => k,
                Err(e) => {
                    tracing::error!(provider = %p.label, keys = %p.keys, cause = %e, "OpenID keys not loaded; restart to reload keys");
                    Vec::new()
                }
            };
            out.push((p.clone(), keys));
        }
        Verifier { providers: out }
    }

    /// Checks `token`.
    ///
    /// # Errors
    /// Why it is not accepted (for the log).
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let header = decode_header(token).map_err(|e| format!("OpenID id_token invalid: {e}"))?;
        let kid = header.kid.unwrap_or_default();
        let mut last = "OpenID id_token claims invalid".to_owned();
        for (p, keys) in &self.providers {
            for k in keys.iter().filter(|k| k.kid == kid && (k.alg.is_empty() || k.alg == "RS256")) {
                let key =
                    DecodingKey::from_rsa_components(&k.n, &k.e).map_err(|e| format!("OpenID key invalid: {e}"))?;
                let mut v = Validation::new(Algorithm::RS256);
                v.set_issuer(&[&p.iss]);
                v.set_audience(&[&p.aud]);
                v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
                match decode::<Claims>(token, &key, &v) {
                    Ok(t) => return Ok(t.claims),
                    Err(e) => last = format!("OpenID id_token rejected by {}: {e}", p.label),
                }
            }
        }
        Err(last)
    }
}
