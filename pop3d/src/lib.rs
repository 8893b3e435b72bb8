//! mmpop3d: the POP3 server of mmmail (RFC 1939 with RFC 2449 CAPA, RFC 2595 STLS,
//! RFC 5034 AUTH PLAIN, RFC 8314 implicit TLS) for the boxes of the shared SQL database
//! (design.md, spec/mail.md §4).
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

use common::net::listener::{self, Listener};
use common::shutdown::Shutdown;
use common::store::Store;

use crate::config::Config;
use crate::conn::Context;
use crate::session::{Session, Settings};

/// Serves POP3 on `listeners` until `shutdown` is cancelled (connection tasks are tracked
/// by `shutdown.tracker`; drain them with [`Shutdown::drain`]). A client beyond
/// `[limits] max_clients` gets one `-ERR [SYS/TEMP]` line and is closed.
///
/// # Errors
/// TLS configuration errors.
pub async fn run(cfg: Arc<Config>, store: Store, listeners: Vec<Listener>, shutdown: Shutdown) -> anyhow::Result<()> {
    let tls = match &cfg.tls {
        Some(t) => Some(common::net::tls::acceptor(&t.cert, &t.key)?),
        None => None,
    };
    let ctx = Arc::new(Context {
        store,
        settings: Arc::new(Settings::from_config(&cfg)),
        tls,
        input_timeout: Duration::from_secs(cfg.limits.input_timeout_or(config::MIN_INPUT_TIMEOUT)),
        session_timeout: Duration::from_secs(cfg.limits.session_timeout),
        shutdown: shutdown.token.clone(),
    });
    let refusal = Session::too_many_clients().to_bytes();
    let handler = move |stream, peer, implicit_tls| {
        let ctx = ctx.clone();
        async move { conn::serve(stream, peer, &ctx, implicit_tls).await }
    };
    listener::accept(listeners, cfg.limits.max_clients, refusal, "pop3", shutdown, handler).await;
    Ok(())
}
