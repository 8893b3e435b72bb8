//! The start-up every daemon shares (design.md "Process model", spec/mail.md §8.5):
//! load and check the config, take the instance lock and pid file, bind the listeners
//! and load the TLS keys as root, drop privileges before any thread starts, then start
//! the runtime, prepare the database and serve; SIGHUP re-reads the config (a bad one is
//! reported and the old one kept); SIGTERM/SIGINT stop accepting and give sessions
//! `[limits] shutdown_grace` seconds to end.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio_rustls::TlsAcceptor;

use crate::config::{DatabaseConfig, LimitsConfig, ListenConfig, LogConfig, TlsConfig, Validate};
use crate::net::listener::Listener;
use crate::privileges::PrivilegesConfig;
use crate::shutdown::Shutdown;
use crate::stats::{Stats, StatsConfig};
use crate::store::Store;

/// The shared sections of a daemon's config.
pub struct Sections<'a> {
    /// `[database]`.
    pub database: &'a DatabaseConfig,
    /// `[listen]`.
    pub listen: &'a ListenConfig,
    /// `[tls]`.
    pub tls: Option<&'a TlsConfig>,
    /// `[limits]`.
    pub limits: &'a LimitsConfig,
    /// `[log]`.
    pub log: &'a LogConfig,
    /// `[privileges]`.
    pub privileges: &'a PrivilegesConfig,
    /// `[stats]`.
    pub stats: &'a StatsConfig,
}

/// What a daemon provides to [`main`].
pub trait Daemon: Sized + Send + Sync + 'static {
    /// Its config file.
    type Config: DeserializeOwned + Validate + Send + Sync + 'static;
    /// Program name for messages (`mmsmtpd`).
    const NAME: &'static str;
    /// The shared sections of `cfg`.
    fn sections(cfg: &Self::Config) -> Sections<'_>;
    /// Adjusts a freshly loaded config (called on start and on reload).
    fn adjust(_cfg: &mut Self::Config) {}
    /// Builds the server with keys loaded and the stats socket opened before privileges
    /// were dropped.
    ///
    /// # Errors
    /// Whatever makes serving impossible.
    fn start(cfg: &Self::Config, store: Store, tls: Option<TlsAcceptor>, stats: Stats) -> anyhow::Result<Arc<Self>>;
    /// Serves until `shutdown` is cancelled.
    fn serve(self: Arc<Self>, listeners: Vec<Listener>, shutdown: Shutdown) -> impl Future<Output = ()> + Send;
    /// Applies a re-read config (SIGHUP).
    ///
    /// # Errors
    /// When the new settings cannot be used; the old ones stay.
    fn reload(&self, cfg: &Self::Config) -> anyhow::Result<()>;
}

fn load<D: Daemon>(path: &Path) -> Result<D::Config, crate::ConfigError> {
    let mut cfg: D::Config = crate::config::load(path)?;
    D::adjust(&mut cfg);
    Ok(cfg)
}

/// The whole life of a daemon process. Returns its exit status: 0 after a clean stop
/// or a successful `check_only`, 1 on any failure (printed on stderr and logged).
pub fn main<D: Daemon>(path: &Path, check_only: bool) -> ExitCode {
    let cfg = match load::<D>(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", D::NAME);
            return ExitCode::FAILURE;
        }
    };
    if check_only {
        println!("{}: {}: configuration OK", D::NAME, path.display());
        return ExitCode::SUCCESS;
    }
    crate::logging::init(D::sections(&cfg).log);
    match start::<D>(path, cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("{}: {e:#}", D::NAME);
            ExitCode::FAILURE
        }
    }
}

fn bind_std(addrs: &[std::net::SocketAddr]) -> anyhow::Result<Vec<std::net::TcpListener>> {
    addrs
        .iter()
        .map(|a| {
            let l = std::net::TcpListener::bind(a).map_err(|e| anyhow::anyhow!("bind {a}: {e}"))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .collect()
}

fn start<D: Daemon>(path: &Path, cfg: D::Config) -> anyhow::Result<()> {
    let s = D::sections(&cfg);
    let _instance = crate::privileges::claim(path, s.privileges)?;
    let plain = bind_std(&s.listen.addresses)?;
    let implicit = bind_std(&s.listen.tls_addresses)?;
    let tls = match s.tls {
        Some(t) => Some(crate::net::tls::acceptor(&t.cert, &t.key)?),
        None => None,
    };
    // Connected now, while the socket path is reachable (before chroot).
    let stats = Stats::open(s.stats, D::NAME);
    let who = crate::privileges::drop_root(s.privileges)?;
    tracing::info!("{who}");
    if who.starts_with("running as root") {
        tracing::warn!("running as root: set [privileges] user");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let s = D::sections(&cfg);
        let store = Store::prepare(s.database).await?;
        tracing::info!(backend = store.backend(), "database ready");
        let mut listeners = Vec::new();
        for l in plain {
            listeners.push(Listener { socket: tokio::net::TcpListener::from_std(l)?, implicit_tls: false });
        }
        for l in implicit {
            listeners.push(Listener { socket: tokio::net::TcpListener::from_std(l)?, implicit_tls: true });
        }
        let grace = Duration::from_secs(s.limits.shutdown_grace);
        if let Err(e) = stats.start_sender() {
            tracing::warn!(cause = %e, "stats updates are sent without a queue");
        }
        stats.started();
        let daemon = D::start(&cfg, store.clone(), tls, stats.clone())?;
        let shutdown = Shutdown::new();
        let mut serving = tokio::spawn(daemon.clone().serve(listeners, shutdown.clone()));
        signals::<D>(path, &daemon, &mut serving).await?;
        tracing::info!("shutting down");
        if !shutdown.drain(grace).await {
            tracing::warn!("sessions still open after {} s; closing", grace.as_secs());
        }
        stats.flush(Duration::from_secs(2)).await;
        store.close().await;
        Ok(())
    })
}

/// Waits for SIGTERM/SIGINT (returns) while handling SIGHUP (reload).
async fn signals<D: Daemon>(
    path: &Path,
    daemon: &Arc<D>,
    serving: &mut tokio::task::JoinHandle<()>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            r = &mut *serving => { r?; return Ok(()); }
            _ = hup.recv() => match load::<D>(path) {
                Ok(new) => match daemon.reload(&new) {
                    Ok(()) => tracing::info!("configuration reloaded"),
                    Err(e) => tracing::error!("reload refused, keeping the running configuration: {e:#}"),
                },
                Err(e) => tracing::error!("reload refused, keeping the running configuration: {e}"),
            },
        }
    }
}

/// What new connections of a daemon use; SIGHUP replaces it whole, connections keep
/// the one they started with. `S` is the daemon's session settings.
pub struct Live<S> {
    /// Session settings.
    pub settings: Arc<S>,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// TLS for STARTTLS/STLS and implicit-TLS listeners.
    pub tls: Option<TlsAcceptor>,
    /// Bandwidth shaping.
    pub shaper: Arc<crate::net::shaping::Shaper>,
}

/// What one connection needs, taken from the [`Live`] settings when it is accepted.
pub struct Context<S> {
    /// The database.
    pub store: Store,
    /// Session settings.
    pub settings: Arc<S>,
    /// TLS, when configured.
    pub tls: Option<TlsAcceptor>,
    /// Client silence allowed (also the write timeout).
    pub input_timeout: Duration,
    /// Maximum session duration.
    pub session_timeout: Duration,
    /// `[limits]`, for the tarpit delay.
    pub limits: LimitsConfig,
    /// Cancelled at shutdown.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// The parts of a running daemon that every protocol shares: the store, the admission
/// gate, and the replaceable [`Live`] settings.
pub struct Core<S> {
    store: Store,
    gate: Arc<crate::net::gate::Gate>,
    live: std::sync::RwLock<Arc<Live<S>>>,
    default_input_timeout: u64,
    stats: Stats,
}

/// Loads `[tls]` into an acceptor.
///
/// # Errors
/// Unreadable or mismatched certificate and key.
pub fn load_tls(tls: Option<&TlsConfig>) -> anyhow::Result<Option<TlsAcceptor>> {
    Ok(match tls {
        Some(t) => Some(crate::net::tls::acceptor(&t.cert, &t.key)?),
        None => None,
    })
}

impl<S> Core<S> {
    /// A core; `default_input_timeout` (seconds) applies when `[limits]` sets none;
    /// `stats` counts connections and refusals.
    pub fn new(store: Store, live: Live<S>, default_input_timeout: u64, stats: Stats) -> Self {
        Self {
            gate: crate::net::gate::Gate::new(&live.limits),
            store,
            live: std::sync::RwLock::new(Arc::new(live)),
            default_input_timeout,
            stats,
        }
    }

    /// The stats client.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Replaces the live settings and the gate's limits (SIGHUP).
    pub fn replace(&self, live: Live<S>) {
        self.gate.update(&live.limits);
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
    }

    /// The admission gate.
    pub fn gate(&self) -> &Arc<crate::net::gate::Gate> {
        &self.gate
    }

    /// The current live settings.
    pub fn live(&self) -> Arc<Live<S>> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A connection's context from the current settings, and the shaper for its stream.
    pub fn context(
        &self,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> (Context<S>, Arc<crate::net::shaping::Shaper>) {
        let live = self.live();
        let ctx = Context {
            store: self.store.clone(),
            settings: live.settings.clone(),
            tls: live.tls.clone(),
            input_timeout: Duration::from_secs(live.limits.input_timeout_or(self.default_input_timeout)),
            session_timeout: Duration::from_secs(live.limits.session_timeout),
            limits: live.limits.clone(),
            shutdown: shutdown.clone(),
        };
        (ctx, live.shaper.clone())
    }
}
