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

use std::sync::{Arc, RwLock};
use std::time::Duration;

use common::config::LimitsConfig;
use common::net::gate::Gate;
use common::net::listener::{self, Listener, Refusals};
use common::net::shaping::Shaper;
use common::shutdown::Shutdown;
use common::store::Store;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::conn::Context;
use crate::flood::Flood;
use crate::proto::reply::Reply;
use crate::session::Settings;

/// What new connections use; SIGHUP replaces it whole, connections keep the one they
/// started with.
pub struct Live {
    /// Session settings.
    pub settings: Arc<Settings>,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// TLS for STARTTLS and implicit-TLS listeners.
    pub tls: Option<TlsAcceptor>,
    /// Bandwidth shaping.
    pub shaper: Arc<Shaper>,
}

/// A running mmsmtpd: the store, the admission gate, the flood table and the [`Live`]
/// settings.
pub struct Server {
    store: Store,
    gate: Arc<Gate>,
    flood: Arc<Flood>,
    live: RwLock<Arc<Live>>,
}

fn load_tls(cfg: &Config) -> anyhow::Result<Option<TlsAcceptor>> {
    Ok(match &cfg.tls {
        Some(t) => Some(common::net::tls::acceptor(&t.cert, &t.key)?),
        None => None,
    })
}

fn live(cfg: &Config, flood: &Arc<Flood>, tls: Option<TlsAcceptor>) -> Live {
    Live {
        settings: Arc::new(Settings::with_flood(cfg, flood.clone())),
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
        Ok(Self::with_tls(cfg, store, load_tls(cfg)?))
    }

    /// Prepares a server with TLS keys already loaded (before privileges were dropped).
    pub fn with_tls(cfg: &Config, store: Store, tls: Option<TlsAcceptor>) -> Arc<Server> {
        let flood = Arc::new(Flood::new(&cfg.smtpd));
        let live = live(cfg, &flood, tls);
        Arc::new(Server { store, gate: Gate::new(&cfg.limits), flood, live: RwLock::new(Arc::new(live)) })
    }

    /// Takes a new configuration (SIGHUP): TLS files, `[limits]`, `[shaping]` and
    /// `[smtpd]` apply to new connections; open ones go on unchanged. Listeners, the
    /// database and privileges need a restart.
    ///
    /// # Errors
    /// A certificate or key that cannot be loaded; the old settings stay.
    pub fn reload(&self, cfg: &Config) -> anyhow::Result<()> {
        let new = live(cfg, &self.flood, load_tls(cfg)?);
        self.gate.update(&cfg.limits);
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        Ok(())
    }

    /// The admission gate (to inspect its state).
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    fn context(&self, token: &tokio_util::sync::CancellationToken) -> (Context, Arc<Shaper>) {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner()).clone();
        let ctx = Context {
            store: self.store.clone(),
            settings: live.settings.clone(),
            tls: live.tls.clone(),
            input_timeout: Duration::from_secs(live.limits.input_timeout_or(config::DEFAULT_INPUT_TIMEOUT)),
            session_timeout: Duration::from_secs(live.limits.session_timeout),
            limits: live.limits.clone(),
            shutdown: token.clone(),
        };
        (ctx, live.shaper.clone())
    }

    /// Serves SMTP on `listeners` until `shutdown` is cancelled; returns once every
    /// accept loop has stopped (drain the connections with [`Shutdown::drain`]).
    pub async fn serve(self: Arc<Self>, listeners: Vec<Listener>, shutdown: Shutdown) {
        let name = self.live.read().unwrap_or_else(|p| p.into_inner()).settings.name.clone();
        let refusal = |text: &str| Reply::new(421, format!("4.7.0 {name} {text}")).to_bytes();
        let refusals = Refusals {
            too_many_clients: refusal("Too many clients, try again later"),
            too_many_from_address: refusal("Too many connections from your address"),
            rate_exceeded: refusal("Connection rate exceeded, try again later"),
        };
        let token = shutdown.token.clone();
        let server = self.clone();
        let handler = move |stream, peer, implicit_tls| {
            let (ctx, shaper) = server.context(&token);
            async move { conn::serve(shaper.wrap(stream), peer, &ctx, implicit_tls).await }
        };
        listener::accept(listeners, self.gate.clone(), refusals, "smtp", shutdown, handler).await;
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
        }
    }

    fn start(cfg: &Config, store: Store, tls: Option<TlsAcceptor>) -> anyhow::Result<Arc<Self>> {
        Ok(Self::with_tls(cfg, store, tls))
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
