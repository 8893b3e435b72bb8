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

use common::daemon::{Core, Live, load_tls};
use common::net::listener::{self, Listener, Refusals};
use common::net::shaping::Shaper;
use common::shutdown::Shutdown;
use common::stats::Stats;
use common::store::Store;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, MIN_INPUT_TIMEOUT};
use crate::proto::reply::Reply;
use crate::session::Settings;

/// A running mmpop3d.
pub struct Server {
    core: Core<Settings>,
}

fn live(cfg: &Config, tls: Option<TlsAcceptor>, stats: &Stats) -> Live<Settings> {
    Live {
        settings: Arc::new(Settings::with_stats(cfg, stats.clone())),
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
        Ok(Self::with_tls(cfg, store, load_tls(cfg.tls.as_ref())?, Stats::open(&cfg.stats, "mmpop3d")))
    }

    /// Prepares a server with TLS keys loaded and the stats socket opened before
    /// privileges were dropped.
    pub fn with_tls(cfg: &Config, store: Store, tls: Option<TlsAcceptor>, stats: Stats) -> Arc<Server> {
        Arc::new(Server { core: Core::new(store, live(cfg, tls, &stats), MIN_INPUT_TIMEOUT, stats) })
    }

    /// Takes a new configuration (SIGHUP) for new connections; open ones go on unchanged.
    ///
    /// # Errors
    /// A certificate or key that cannot be loaded; the old settings stay.
    pub fn reload(&self, cfg: &Config) -> anyhow::Result<()> {
        self.core.replace(live(cfg, load_tls(cfg.tls.as_ref())?, self.core.stats()));
        Ok(())
    }

    /// Serves POP3 on `listeners` until `shutdown` is cancelled.
    pub async fn serve(self: Arc<Self>, listeners: Vec<Listener>, shutdown: Shutdown) {
        let refusal = |text: &str| Reply::err(format!("[SYS/TEMP] {text}")).to_bytes();
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
        listener::accept(listeners, self.core.gate().clone(), refusals, self.core.stats().clone(), shutdown, handler)
            .await;
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
    const NAME: &'static str = "mmpop3d";

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

    fn adjust(cfg: &mut Config) {
        if cfg.enforce_min_input_timeout() {
            eprintln!(
                "mmpop3d: warning: limits.input_timeout raised to {MIN_INPUT_TIMEOUT} seconds (RFC 1939 section 3)"
            );
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
