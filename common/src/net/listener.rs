//! The accept loop every daemon uses (style.md P3, P5): one task per listener, a
//! connection cap enforced with a semaphore (a client over it gets the daemon's refusal
//! line and is closed; `accept` never stalls), one tracked task per connection inside a
//! `conn` span, and a stop when the shutdown token is cancelled.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::shutdown::Shutdown;

/// A bound listener and whether it speaks implicit TLS.
#[derive(Debug)]
pub struct Listener {
    /// The socket.
    pub socket: TcpListener,
    /// True for implicit-TLS listeners (`[listen] tls_addresses`).
    pub implicit_tls: bool,
}

/// Binds `[listen] addresses` (plain) and `tls_addresses` (implicit TLS).
///
/// # Errors
/// The first address that cannot be bound, named in the error.
pub async fn bind(plain: &[SocketAddr], tls: &[SocketAddr]) -> io::Result<Vec<Listener>> {
    let mut out = Vec::new();
    for socket in super::bind_all(plain).await? {
        out.push(Listener { socket, implicit_tls: false });
    }
    for socket in super::bind_all(tls).await? {
        out.push(Listener { socket, implicit_tls: true });
    }
    Ok(out)
}

/// Accepts on every listener until `shutdown` is cancelled; returns when all loops have
/// stopped. Each connection runs `handler(stream, peer, implicit_tls)` in a task tracked
/// by `shutdown.tracker`. Beyond `max_clients` concurrent connections, `refusal` (a
/// complete protocol line) is written and the connection closed.
pub async fn accept<H, F>(
    listeners: Vec<Listener>,
    max_clients: usize,
    refusal: Vec<u8>,
    proto: &'static str,
    shutdown: Shutdown,
    handler: H,
) where
    H: Fn(TcpStream, SocketAddr, bool) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = io::Result<()>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_clients));
    let refusal: Arc<[u8]> = refusal.into();
    let mut loops = tokio::task::JoinSet::new();
    for l in listeners {
        if let Ok(addr) = l.socket.local_addr() {
            tracing::info!(%addr, tls = l.implicit_tls, proto, "listening");
        }
        let (slots, refusal, shutdown, handler) = (slots.clone(), refusal.clone(), shutdown.clone(), handler.clone());
        loops.spawn(async move {
            let mut next_id: u64 = 0;
            loop {
                let accepted = tokio::select! {
                    () = shutdown.token.cancelled() => return,
                    a = l.socket.accept() => a,
                };
                let (mut stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(cause = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                next_id += 1;
                let span = tracing::info_span!("conn", proto, peer = %peer, id = next_id);
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    let refusal = refusal.clone();
                    shutdown.tracker.spawn(
                        async move {
                            tracing::warn!("refused: too many clients");
                            let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&refusal)).await;
                        }
                        .instrument(span),
                    );
                    continue;
                };
                let fut = handler(stream, peer, l.implicit_tls);
                shutdown.tracker.spawn(
                    async move {
                        tracing::debug!("connected");
                        if let Err(e) = fut.await {
                            tracing::info!(cause = %e, "connection ended");
                        }
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
        });
    }
    while loops.join_next().await.is_some() {}
}
