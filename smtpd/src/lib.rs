//! mmsmtpd: the inbound ESMTP server of mmmail. Accepts mail for local boxes only (no
//! relaying, no AUTH) and stores it in the shared SQL database (design.md, spec/mail.md
//! §3).
//!
//! Layers (style.md P1): [`proto`] parses and formats (pure), [`session`] decides (no
//! sockets), [`conn`] does the I/O; [`Server`] admits connections and holds what SIGHUP
//! may replace.

#![forbid(unsafe_code)]

pub mod config;
pub mod conn;
pub mod flood;
pub mod proto;
pub mod session;

use std::sync::Arc;

use common::daemon::{Core, Live, load_tls};
use common::net::gate::Gate;
use common::net::listener::{self, Listener, Refusals};
use common::net::shaping::Shaper;
use common::shutdown::Shutdown;
use common::stats::Stats;
use common::store::Store;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::flood::Flood;
use crate::proto::reply::Reply;
use crate::session::Settings;

/// A running mmsmtpd: the shared [`Core`] and the flood table, which survives reloads.
pub struct Server {
    core: Core<Settings>,
    flood: Arc<Flood>,
}

fn live(cfg: &Config, flood: &Arc<Flood>, tls: Option<TlsAcceptor>, stats: &Stats) -> Live<Settings> {
    Live {
        settings: Arc::new(Settings::with_flood(cfg, flood.clone(), stats.clone())),
        limits: cfg.limits.clone(),
        tls,
        shaper: Shaper::new(&cfg.shaping),
    }
}

impl Server {
    /// Prepares a server for `cfg`, loading its TLS certificate and key.
    ///
    /// # Errors
    /// Unreadable or mismatched certificate and key.
    pub fn new(cfg: &Config, store: Store) -> anyhow::Result<Arc<Server>> {
        Ok(Self::with_tls(cfg, store, load_tls(cfg.tls.as_ref())?, Stats::open(&cfg.stats, "mmsmtpd")))
    }

    /// Prepares a server with TLS keys loaded and the stats socket opened before
    /// privileges were dropped.
    pub fn with_tls(cfg: &Config, store: Store, tls: Option<TlsAcceptor>, stats: Stats) -> Arc<Server> {
        let flood = Arc::new(Flood::new(&cfg.smtpd));
        let core = Core::new(store, live(cfg, &flood, tls, &stats), config::DEFAULT_INPUT_TIMEOUT, stats);
        Arc::new(Server { core, flood })
    }

    /// Takes a new configuration (SIGHUP): TLS files, `[limits]`, `[shaping]` and
    /// `[smtpd]` apply to new connections; open ones go on unchanged. Listeners, the
    /// database and privileges need a restart.
    ///
    /// # Errors
    /// A certificate or key that cannot be loaded; the old settings stay.
    pub fn reload(&self, cfg: &Config) -> anyhow::Result<()> {
        self.core.replace(live(cfg, &self.flood, load_tls(cfg.tls.as_ref())?, self.core.stats()));
        Ok(())
    }

    /// The admission gate (to inspect its state).
    pub fn gate(&self) -> &Arc<Gate> {
        self.core.gate()
    }

    /// Serves SMTP on `listeners` until `shutdown` is cancelled; returns once every
    /// accept loop has stopped (drain the connections with [`Shutdown::drain`]).
    pub async fn serve(self: Arc<Self>, listeners: Vec<Listener>, shutdown: Shutdown) {
        let name = self.core.live().settings.name.clone();
        let refusal = |text: &str| Reply::new(421, format!("4.7.0 {name} {text}")).to_bytes();
        let refusals = Refusals {
            too_many_clients: refusal("Too many clients, try again later"),
            too_many_from_address: refusal("Too many connections from your address"),
            rate_exceeded: refusal("Connection rate exceeded, try again later"),
        };
        let token = shutdown.token.clone();
        let server = self.clone();
        let handler = move |stream, peer, implicit_tls| {
            let (ctx, shaper) = server.core.context(&token);
            async move { conn::serve(shaper.wrap(stream), peer, &ctx, implicit_tls).await }
        };
        listener::accept(listeners, self.gate().clone(), refusals, self.core.stats().clone(), shutdown, handler).await;
    }
}

/// [`Server::new`] then [`Server::serve`].
///
/// # Errors
/// As [`Server::new`].
pub async fn run(cfg: Arc<Config>, store: Store, listeners: Vec<Listener>, shutdown: Shutdown) -> anyhow::Result<()> {
    Server::new(&cfg, store)?.serve(listeners, shutdown).await;
    Ok(())
}

impl common::daemon::Daemon for Server {
    type Config = Config;
    const NAME: &'static str = "mmsmtpd";

    fn sections(cfg: &Config) -> common::daemon::Sections<'_> {
        common::daemon::Sections {
            database: &cfg.database,
            listen: &cfg.listen,
            tls: cfg.tls.as_ref(),
            limits: &cfg.limits,
            log: &cfg.log,
            privileges: &cfg.privileges,
            stats: &cfg.stats,
        }
    }

    fn start(cfg: &Config, store: Store, tls: Option<TlsAcceptor>, stats: Stats) -> anyhow::Result<Arc<Self>> {
        Ok(Self::with_tls(cfg, store, tls, stats))
    }

    fn serve(
        self: Arc<Self>,
        listeners: Vec<Listener>,
        shutdown: Shutdown,
    ) -> impl std::future::Future<Output = ()> + Send {
        Server::serve(self, listeners, shutdown)
    }

    fn reload(&self, cfg: &Config) -> anyhow::Result<()> {
        Server::reload(self, cfg)
    }
}
