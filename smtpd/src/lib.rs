//! mmsmtpd: the inbound ESMTP server of mmmail. Accepts mail for local boxes only (no
//! relaying, no AUTH) and stores it in the shared SQL database (design.md, spec/mail.md
//! §3).
//!
//! Layers (style.md P1): [`proto`] parses and formats (pure), [`session`] decides (no
//! sockets), [`conn`] does the I/O; [`run`] accepts connections.

#![forbid(unsafe_code)]

pub mod config;
pub mod conn;
pub mod proto;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use common::shutdown::Shutdown;
use common::store::Store;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::config::Config;
use crate::conn::Context;
use crate::session::{Session, Settings};

/// Bound listeners: plain ones (STARTTLS offered when TLS is configured) and
/// implicit-TLS ones.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Plain listeners.
    pub plain: Vec<TcpListener>,
    /// Implicit-TLS listeners.
    pub tls: Vec<TcpListener>,
}

/// Serves SMTP on `listeners` until `shutdown` is cancelled, then returns once every
/// accept loop has stopped (connection tasks are tracked by `shutdown.tracker`; drain
/// them with [`Shutdown::drain`]).
///
/// A client beyond `[limits] max_clients` gets one `421 4.7.0` line and is closed; accept
/// never waits for a free slot (style.md P3).
///
/// # Errors
/// TLS configuration errors (unreadable or mismatched certificate and key).
pub async fn run(cfg: Arc<Config>, store: Store, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let tls = match &cfg.tls {
        Some(t) => Some(common::net::tls::acceptor(&t.cert, &t.key)?),
        None => None,
    };
    let ctx = Context {
        store,
        settings: Arc::new(Settings::from_config(&cfg)),
        tls,
        input_timeout: Duration::from_secs(cfg.limits.input_timeout),
        session_timeout: Duration::from_secs(cfg.limits.session_timeout),
        shutdown: shutdown.token.clone(),
    };
    let slots = Arc::new(Semaphore::new(cfg.limits.max_clients));
    let mut loops = tokio::task::JoinSet::new();
    for (listener, implicit_tls) in
        listeners.plain.into_iter().map(|l| (l, false)).chain(listeners.tls.into_iter().map(|l| (l, true)))
    {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, tls = implicit_tls, "listening");
        }
        loops.spawn(accept_loop(listener, implicit_tls, ctx.clone(), slots.clone(), shutdown.clone()));
    }
    while loops.join_next().await.is_some() {}
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    implicit_tls: bool,
    ctx: Context,
    slots: Arc<Semaphore>,
    shutdown: Shutdown,
) {
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            () = shutdown.token.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
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
        let span = tracing::info_span!("conn", proto = "smtp", peer = %peer, id = next_id);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let name = ctx.settings.name.clone();
            shutdown.tracker.spawn(
                async move {
                    tracing::warn!("refused: too many clients");
                    let mut stream = stream;
                    let bye = Session::too_many_clients(&name).to_bytes();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        tokio::io::AsyncWriteExt::write_all(&mut stream, &bye),
                    )
                    .await;
                }
                .instrument(span),
            );
            continue;
        };
        let ctx = ctx.clone();
        shutdown.tracker.spawn(
            async move {
                tracing::debug!("connected");
                if let Err(e) = conn::serve(stream, peer, &ctx, implicit_tls).await {
                    tracing::info!(cause = %e, "connection ended");
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}
