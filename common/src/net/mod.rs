//! Transport helpers shared by the daemons: TLS setup, bounded line reading, listeners.

pub mod line;
pub mod listener;
pub mod tls;

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Binds every address, failing on the first that cannot be bound.
///
/// # Errors
/// The I/O error of the first failing bind, with the address in its message.
pub async fn bind_all(addrs: &[SocketAddr]) -> std::io::Result<Vec<TcpListener>> {
    let mut out = Vec::with_capacity(addrs.len());
    for a in addrs {
        let l = TcpListener::bind(a).await.map_err(|e| std::io::Error::new(e.kind(), format!("bind {a}: {e}")))?;
        out.push(l);
    }
    Ok(out)
}
