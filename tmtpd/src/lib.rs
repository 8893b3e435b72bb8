//! mmtmtpd: the TMTP server of mmmail, compatible with mnm's clients and test suite
//! (spec/tmtp.md), storing accounts, groups and queued messages in the shared SQL
//! database.
//!
//! Layers (style.md P1): [`proto`] frames, headers and the server's JSON (pure);
//! [`session`] what each request does; [`queue`] delivery to one node; [`conn`] the
//! I/O; [`hub`] what connections share.

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod conn;
pub mod groups;
pub mod hub;
pub mod oidc;
pub mod proto;
pub mod queue;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use common::daemon::{Core, Live, load_tls};
use common::net::listener::{self, Listener, Refusals};
use common::net::shaping::Shaper;
use common::shutdown::Shutdown;
use common::stats::Stats;
use common::store::Store;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::hub::{Hub, Settings};

/// A running mmtmtpd.
pub struct Server {
    core: Core<()>,
    hub: Arc<Hub>,
}

fn live(cfg: &Config, tls: Option<TlsAcceptor>) -> Live<()> {
    Live { settings: Arc::new(()), limits: cfg.limits.clone(), tls, shaper: Shaper::new(&cfg.shaping) }
}

/// The daemon settings from a validated config.
///
/// # Errors
/// An `authby` list that does not process (already refused by validation).
pub fn settings(cfg: &Config) -> anyhow::Result<Settings> {
    let t = &cfg.tmtpd;
    Ok(Settings {
        name: if t.name.is_empty() { cfg.server.name.clone() } else { t.name.clone() },
        auth: t.auth().map_err(anyhow::Error::msg)?,
        login_timeout: Duration::from_secs(t.login_timeout),
        idle_timeout: Duration::from_secs(t.idle_timeout),
        ack_timeout: Duration::from_secs(t.ack_timeout),
        max_nodes: t.max_nodes,
    })
}

impl Server {
    /// Prepares a server: removes uploads a crash cut off, continues the message ids,
    /// loads the OpenID Connect keys.
    ///
    /// # Errors
    /// Database failures, unusable TLS files.
    pub async fn new(
        cfg: &Config,
        store: Store,
        tls: Option<TlsAcceptor>,
        stats: Stats,
    ) -> anyhow::Result<Arc<Server>> {
        let cut = store.tmtp_cleanup().await?;
        if cut > 0 {
            tracing::info!(messages = cut, "removed uploads cut off by a stop");
        }
        let last = u64::try_from(store.tmtp_max_message_id().await?).unwrap_or(0);
        let settings = settings(cfg)?;
        let oidc = oidc::Verifier::load(&settings.auth.providers).await;
        let hub = Arc::new(Hub::new(store.clone(), settings, stats.clone(), oidc, last));
        let core = Core::new(store, live(cfg, tls), cfg.tmtpd.idle_timeout, stats);
        Ok(Arc::new(Server { core, hub }))
    }

    /// [`Server::new`] loading `[tls]` itself, counting with `[stats]`.
    ///
    /// # Errors
    /// As [`Server::new`].
    pub async fn from_config(cfg: &Config, store: Store) -> anyhow::Result<Arc<Server>> {
        Self::new(cfg, store, load_tls(cfg.tls.as_ref())?, Stats::open(&cfg.stats, "mmtmtpd")).await
    }

    /// The shared state (tests inspect it).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// New TLS files, `[limits]` and `[shaping]` for new connections (SIGHUP); the rest
    /// of `[tmtpd]` needs a restart.
    ///
    /// # Errors
    /// Unusable TLS files; the old settings stay.
    pub fn reload(&self, cfg: &Config) -> anyhow::Result<()> {
        self.core.replace(live(cfg, load_tls(cfg.tls.as_ref())?));
        Ok(())
    }

    /// Serves TMTP until `shutdown` is cancelled. The server never speaks first, so a
    /// refused connection is just closed.
    pub async fn serve(self: Arc<Self>, listeners: Vec<Listener>, shutdown: Shutdown) {
        let refusals =
            Refusals { too_many_clients: Vec::new(), too_many_from_address: Vec::new(), rate_exceeded: Vec::new() };
        let token = shutdown.token.clone();
        let server = self.clone();
        let handler = move |stream, peer, implicit_tls: bool| {
            let live = server.core.live();
            let tls = if implicit_tls { live.tls.clone() } else { None };
            let shaped = live.shaper.wrap(stream);
            let (hub, token) = (server.hub.clone(), token.clone());
            async move { conn::serve(shaped, peer, hub, tls, token).await }
        };
        let tracker = shutdown.tracker.clone();
        listener::accept(listeners, self.core.gate().clone(), refusals, self.core.stats().clone(), shutdown, handler)
            .await;
        // The nodes' queues and the ohi writers end with their links: the drain waits
        // for them as for the connections.
        let tasks = self.hub.tasks.clone();
        tracker.spawn(async move {
            tasks.close();
            tasks.wait().await;
        });
    }
}

impl common::daemon::Daemon for Server {
    type Config = Config;
    const NAME: &'static str = "mmtmtpd";

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
        // Called on the runtime: finish the async preparation here.
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(Server::new(cfg, store, tls, stats)))
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
