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

use common::daemon::{Core, Daemon, Live, load_tls};
use common::net::listener::{Listener, Refusals};
use common::net::shaping::Shaper;
use common::shutdown::Shutdown;
use common::stats::Stats;
use common::store::Store;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, MIN_INPUT_TIMEOUT, Pop3dConfig, enforce_min_input_timeout};
use crate::proto::reply::Reply;
use crate::session::Settings;

/// A running mmpop3d.
pub struct Server {
    core: Core<Settings>,
}

fn live(
    cfg: &Config,
    tls: Option<TlsAcceptor>,
    stats: &Stats,
    logins: Option<Arc<common::guard::Logins>>,
) -> Live<Settings> {
    Live {
        settings: Arc::new(Settings::with_stats(cfg, stats.clone(), logins)),
        limits: cfg.limits.clone(),
        tls,
        shaper: Shaper::new(&cfg.shaping),
        bans: cfg.bans.clone(),
    }
}

impl Daemon for Server {
    type Section = Pop3dConfig;
    const NAME: &'static str = "mmpop3d";

    fn adjust(cfg: &mut Config) {
        if enforce_min_input_timeout(cfg) {
            eprintln!(
                "mmpop3d: warning: limits.input_timeout raised to {MIN_INPUT_TIMEOUT} seconds (RFC 1939 section 3)"
            );
        }
    }

    async fn start(cfg: &Config, store: Store, tls: Option<TlsAcceptor>, stats: Stats) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Server { core: Core::new(store, live(cfg, tls, &stats, None), MIN_INPUT_TIMEOUT, stats) }))
    }

    /// Serves POP3 on `listeners` until `shutdown` is cancelled.
    async fn serve(self: Arc<Self>, listeners: Vec<Listener>, shutdown: Shutdown) {
        let refusals = Refusals::new(|text| Reply::err(format!("[SYS/TEMP] {text}")).to_bytes());
        self.core
            .accept(listeners, Some(refusals), shutdown, |stream, peer, implicit_tls, ctx| async move {
                conn::serve(stream, peer, &ctx, implicit_tls).await
            })
            .await;
    }

    /// Takes a new configuration (SIGHUP) for new connections; open ones go on unchanged.
    fn reload(&self, cfg: &Config) -> anyhow::Result<()> {
        let logins = self.core.live().settings.logins.clone();
        self.core.replace(live(cfg, load_tls(cfg.tls.as_ref())?, self.core.stats(), Some(logins)));
        Ok(())
    }
}
