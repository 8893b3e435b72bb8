//! The life every daemon shares (design.md "Process model", spec/mail.md §8.5): load
//! and check the config ([`front`]), take the instance lock and pid file, bind what needs
//! root and drop privileges before any thread starts, then the runtime ([`process`]);
//! SIGHUP re-reads the config (a bad one is reported and the old one kept), SIGTERM and
//! SIGINT stop ([`until_stopped`]). mmstatd lives this life through these functions; the
//! network daemons through [`main`] and the [`Daemon`] contract, which adds the
//! listeners, TLS, the database, the admission gate and the drain of `[limits]
//! shutdown_grace` seconds.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{DaemonFile, LimitsConfig, LogConfig, Section, TlsConfig};
use crate::error::StoreError;
use crate::net::listener::{Listener, Refusals};
use crate::net::proxy::ProxyNetworks;
use crate::net::shaping::Shaped;
use crate::privileges::PrivilegesConfig;
use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::store::Store;

/// The command line every daemon takes (flattened into each program's own).
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// Configuration file [default: /etc/mmmail/PROGRAM.toml]
    #[arg(short = 'c', long = "config", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Check the configuration and what starting needs (users and groups, the files it
    /// names and who can read them, the database and its schema), print every problem,
    /// exit: 0 when it can start, 1 when not.
    #[arg(long)]
    pub check_config: bool,
    /// With --check-config: skip what needs the network (a PostgreSQL or MySQL server).
    #[arg(long, requires = "check_config")]
    pub offline: bool,
}

impl Args {
    /// The config file of program `name`: `-c`, or `/etc/mmmail/<name>.toml`.
    pub fn config_path(&self, name: &str) -> PathBuf {
        self.config.clone().unwrap_or_else(|| PathBuf::from(format!("/etc/mmmail/{name}.toml")))
    }
}

/// What `--check-config` found beyond the file's own keys (see [`front`]).
#[derive(Debug, Default)]
pub struct Checked {
    /// What could not be checked, and why (printed; the check still passes).
    pub notes: Vec<String>,
    /// What makes the configuration unusable, one line each naming its key (the check
    /// fails).
    pub problems: Vec<String>,
}

/// An error and its causes in one line, each cause said once: a cause whose text the
/// message before it already holds (`migration: while executing migrations: 1062 …`
/// wraps its source's text) is not repeated, as `{:#}` would.
pub fn said_once(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// The front of every daemon's `main`: loads and checks the config with `load`; with
/// `--check-config`, runs `check` on it, prints the result and stops; otherwise starts
/// logging as `log` says and runs `life`. Returns the exit status: 0 after a clean stop
/// or a successful check, 1 on any failure (printed on standard error and logged).
pub fn front<C>(
    name: &str,
    args: &Args,
    load: impl FnOnce(&Path) -> Result<C, crate::ConfigError>,
    check: impl FnOnce(&Path, &C, bool) -> Checked,
    log: impl FnOnce(&C) -> &LogConfig,
    life: impl FnOnce(&Path, C) -> anyhow::Result<()>,
) -> ExitCode {
    let path = args.config_path(name);
    let cfg = match load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.check_config {
        let checked = check(&path, &cfg, args.offline);
        for note in &checked.notes {
            println!("{name}: note: {note}");
        }
        if !checked.problems.is_empty() {
            eprintln!("{name}: {}: {} problem(s):", path.display(), checked.problems.len());
            for p in &checked.problems {
                eprintln!("  {p}");
            }
            return ExitCode::FAILURE;
        }
        println!("{name}: {}: configuration OK", path.display());
        return ExitCode::SUCCESS;
    }
    crate::logging::init(log(&cfg));
    match life(&path, cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Logging goes to standard error: said once, there.
            if tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!("{}", said_once(&e));
            } else {
                eprintln!("{name}: {}", said_once(&e));
            }
            ExitCode::FAILURE
        }
    }
}

/// The process: takes the instance lock and pid file of the config at `path`, runs
/// `bind` (still root: sockets, keys, the stats socket), drops privileges as `privileges`
/// says before any thread exists, then runs `serve` with what was bound on a
/// multi-threaded runtime.
///
/// # Errors
/// Whatever fails; the instance lock is released in any case.
pub fn process<B, Fut>(
    path: &Path,
    privileges: &PrivilegesConfig,
    bind: impl FnOnce() -> anyhow::Result<B>,
    serve: impl FnOnce(B) -> Fut,
) -> anyhow::Result<()>
where
    Fut: Future<Output = anyhow::Result<()>>,
{
    let _instance = crate::privileges::claim(path, privileges)?;
    let bound = bind()?;
    let who = crate::privileges::drop_root(privileges)?;
    tracing::info!("{who}");
    if who.starts_with("running as root") {
        tracing::warn!("running as root: set [privileges] user");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(serve(bound))
}

/// Runs `serving` until SIGTERM or SIGINT, calling `reload` on each SIGHUP. Returns
/// `None` after a stop signal (`serving` is left to be wound down), or `serving`'s own
/// result if it ended first.
///
/// # Errors
/// The signal handlers could not be installed.
pub async fn until_stopped<F>(serving: &mut F, mut reload: impl FnMut()) -> anyhow::Result<Option<F::Output>>
where
    F: Future + Unpin,
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(None),
            _ = int.recv() => return Ok(None),
            r = &mut *serving => return Ok(Some(r)),
            _ = hup.recv() => reload(),
        }
    }
}

/// A network daemon's config file: the shared sections and its own.
pub type Config<D> = DaemonFile<<D as Daemon>::Section>;

/// What a network daemon provides to [`main`]; [`Daemon::start`] is the one way to make
/// its server (the tests use it too).
pub trait Daemon: Sized + Send + Sync + 'static {
    /// Its own config section (`[smtpd]`, …).
    type Section: Section;
    /// Program name for messages and the stats keys (`mmsmtpd`).
    const NAME: &'static str;
    /// Reads, as root and before any `chroot`, what the daemon needs from files the
    /// dropped user may not reach later (mmsmtpd: `/etc/resolv.conf`). Called once, by
    /// [`main`], with the listeners.
    ///
    /// # Errors
    /// A file that must be read cannot be.
    fn before_privileges(_cfg: &Config<Self>) -> anyhow::Result<()> {
        Ok(())
    }
    /// Adjusts a freshly loaded config (called on start and on reload).
    fn adjust(_cfg: &mut Config<Self>) {}
    /// Builds the server on the runtime, the database prepared, TLS keys loaded and the
    /// stats socket opened (before privileges were dropped, when run by [`main`]).
    ///
    /// # Errors
    /// Whatever makes serving impossible.
    fn start(
        cfg: &Config<Self>,
        store: Store,
        tls: Option<TlsAcceptor>,
        stats: Stats,
    ) -> impl Future<Output = anyhow::Result<Arc<Self>>> + Send;
    /// Serves on `listeners` until `shutdown` is cancelled (connections are then drained
    /// through `shutdown`'s tracker).
    fn serve(self: Arc<Self>, listeners: Vec<Listener>, shutdown: Shutdown) -> impl Future<Output = ()> + Send;
    /// Applies a re-read config (SIGHUP) to new connections.
    ///
    /// # Errors
    /// When the new settings cannot be used; the old ones stay.
    fn reload(&self, cfg: &Config<Self>) -> anyhow::Result<()>;
    /// What only the database can tell about `cfg` (`--check-config`, and a warning at
    /// start): problems, one line each naming the key. None by default.
    ///
    /// # Errors
    /// A database failure.
    fn check(cfg: &Config<Self>, store: &Store) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        let _ = (cfg, store);
        async { Ok(Vec::new()) }
    }
}

fn load<D: Daemon>(path: &Path) -> Result<Config<D>, crate::ConfigError> {
    let mut cfg: Config<D> = crate::config::load(path)?;
    D::adjust(&mut cfg);
    Ok(cfg)
}

/// The whole life of a network daemon process (see the module notes); the exit status.
pub fn main<D: Daemon>(args: &Args) -> ExitCode {
    front(D::NAME, args, load::<D>, check::<D>, |c| &c.log, life::<D>)
}

/// Checks that the user the daemon becomes can use what it needs after dropping root:
/// its config file (re-read on SIGHUP), an SQLite database and its directory, the stats
/// socket, the TLS files (re-read on SIGHUP; a note only). Problems and notes go into
/// `checked`.
pub fn check_files(
    path: &Path,
    privileges: &PrivilegesConfig,
    database: Option<&crate::config::DatabaseConfig>,
    stats: &crate::stats::StatsConfig,
    tls: Option<&TlsConfig>,
    checked: &mut Checked,
) {
    use crate::privileges::Access;
    let Some(who) = privileges.identity() else { return };
    let mut need = |key: &str, file: &Path, access: Access, problem: bool, why: &str| {
        if let Err(reason) = who.may(file, access) {
            let line = format!("{key}: {reason}: {why}");
            if problem { checked.problems.push(line) } else { checked.notes.push(line) }
        }
    };
    need("config file", path, Access::Read, true, "SIGHUP could not re-read it");
    if let Some(file) = database.and_then(|d| crate::store::sqlite_file(d.url.expose())) {
        let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if dir.is_dir() {
            need("database.url", dir, Access::ReadWrite, true, "SQLite makes its journal files there");
        }
        if file.exists() {
            need("database.url", &file, Access::ReadWrite, true, "the daemon stores mail in it");
        }
    }
    if stats.enabled && stats.socket.exists() {
        need(
            "stats.socket",
            &stats.socket,
            Access::ReadWrite,
            true,
            "counts would be lost after mmstatd restarts (add its group to [privileges] groups)",
        );
    }
    if let Some(tls) = tls {
        for (key, file) in [("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
            if file.exists() {
                need(key, file, Access::Read, false, "read at start as root, but SIGHUP cannot reload it");
            }
        }
    }
}

/// `--check-config` beyond the file's own keys: [`check_files`], then the database
/// (unless `offline` and it is reached over the network): reachable, its schema current
/// (or to be migrated at start), its contents (box addresses in lowercase, and
/// [`Daemon::check`]). It is never created or migrated by the check.
fn check<D: Daemon>(path: &Path, cfg: &Config<D>, offline: bool) -> Checked {
    let mut checked = Checked::default();
    check_files(path, &cfg.privileges, Some(&cfg.database), &cfg.stats, cfg.tls.as_ref(), &mut checked);
    let url = cfg.database.url.expose();
    let sqlite = crate::store::sqlite_file(url);
    if let Some(file) = &sqlite
        && !file.exists()
    {
        checked
            .notes
            .push(format!("{} does not exist yet (made at start): its contents were not checked", file.display()));
        return checked;
    }
    if offline && sqlite.is_none() {
        checked.notes.push("database not checked (--offline)".into());
        return checked;
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            checked.problems.push(format!("database not checked: {e}"));
            return checked;
        }
    };
    rt.block_on(async {
        let mut db = cfg.database.clone();
        db.acquire_timeout = db.acquire_timeout.min(5);
        let store = match Store::connect(&db).await {
            Ok(s) => s,
            Err(e) => {
                checked.problems.push(format!("database.url: {e}"));
                return;
            }
        };
        match crate::store::migrate::check_current(&store).await {
            Err(e @ StoreError::SchemaBehind(_)) if cfg.database.migrate => {
                checked.notes.push(format!("{e}: migrated at start (migrate = true); its contents were not checked"));
            }
            Err(e) => checked.problems.push(format!("database: {e}")),
            Ok(()) => {
                match store.mixed_case_boxes().await {
                    Ok(boxes) => checked.problems.extend(boxes.into_iter().map(|b| {
                        format!("database: box {b:?} is not in lowercase: it receives no mail and cannot log in")
                    })),
                    Err(e) => checked.problems.push(format!("database: {e}")),
                }
                match D::check(cfg, &store).await {
                    Ok(problems) => checked.problems.extend(problems),
                    Err(e) => checked.problems.push(format!("database: {e}")),
                }
            }
        }
        store.close().await;
    });
    checked
}

fn bind_std(addrs: &[SocketAddr], backlog: Option<u32>) -> anyhow::Result<Vec<std::net::TcpListener>> {
    addrs.iter().map(|a| Ok(crate::net::listener::bind(*a, backlog)?)).collect()
}

fn life<D: Daemon>(path: &Path, cfg: Config<D>) -> anyhow::Result<()> {
    let cfg = &cfg;
    let bind = || {
        let plain = bind_std(&cfg.listen.addresses, cfg.listen.backlog)?;
        let implicit = bind_std(&cfg.listen.tls_addresses, cfg.listen.backlog)?;
        let tls = load_tls(cfg.tls.as_ref())?;
        // Connected now, while the socket path is reachable (before chroot).
        let stats = Stats::open(&cfg.stats, D::NAME);
        D::before_privileges(cfg)?;
        Ok((plain, implicit, tls, stats))
    };
    process(path, &cfg.privileges, bind, |(plain, implicit, tls, stats)| async move {
        let store = Store::prepare(&cfg.database).await?;
        tracing::info!(backend = store.backend(), "database ready");
        let mut listeners = Vec::new();
        let proxies = ProxyNetworks::new(&cfg.listen.proxy_networks);
        for (list, implicit_tls) in [(plain, false), (implicit, true)] {
            for l in list {
                let socket = tokio::net::TcpListener::from_std(l)?;
                listeners.push(Listener { socket, implicit_tls, proxies: proxies.clone() });
            }
        }
        if let Err(e) = stats.start_sender() {
            tracing::warn!(cause = %e, "stats updates are sent without a queue");
        }
        stats.started();
        let daemon = D::start(cfg, store.clone(), tls, stats.clone()).await?;
        let shutdown = Shutdown::new();
        let mut serving = Box::pin(tokio::spawn(daemon.clone().serve(listeners, shutdown.clone())));
        let reload = || match load::<D>(path) {
            Ok(new) => match daemon.reload(&new) {
                Ok(()) => tracing::info!("configuration reloaded"),
                Err(e) => tracing::error!("reload refused, keeping the running configuration: {}", said_once(&e)),
            },
            Err(e) => tracing::error!("reload refused, keeping the running configuration: {e}"),
        };
        if let Some(ended) = until_stopped(&mut serving, reload).await? {
            ended?;
        }
        tracing::info!("shutting down");
        let grace = Duration::from_secs(cfg.limits.shutdown_grace);
        if !shutdown.drain(grace).await {
            tracing::warn!("sessions still open after {} s; closing", grace.as_secs());
        }
        stats.flush(Duration::from_secs(2)).await;
        store.close().await;
        Ok(())
    })
}

/// What new connections of a daemon use; SIGHUP replaces it whole, connections keep
/// the one they started with. `S` is what the daemon's sessions share (their settings).
pub struct Live<S> {
    /// Session settings.
    pub settings: Arc<S>,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// TLS for STARTTLS/STLS and implicit-TLS listeners.
    pub tls: Option<TlsAcceptor>,
    /// Bandwidth shaping.
    pub shaper: Arc<crate::net::shaping::Shaper>,
    /// `[bans]`.
    pub bans: crate::bans::BansConfig,
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
    /// Seconds a TLS handshake may take (`[limits] handshake_timeout`).
    pub handshake_timeout: Duration,
    /// This connection as stress mode sees it.
    pub watch: crate::net::stress::Watch,
    /// The daemon's bans, to count failures toward them.
    pub bans: Arc<crate::bans::Bans>,
}

/// The parts of a running daemon that every protocol shares: the store, the admission
/// gate, and the replaceable [`Live`] settings. Cheap to clone.
pub struct Core<S> {
    store: Store,
    gate: Arc<crate::net::gate::Gate>,
    bans: Arc<crate::bans::Bans>,
    live: Arc<std::sync::RwLock<Arc<Live<S>>>>,
    default_input_timeout: u64,
    stats: Stats,
}

impl<S> Clone for Core<S> {
    fn clone(&self) -> Self {
        Core {
            store: self.store.clone(),
            gate: self.gate.clone(),
            bans: self.bans.clone(),
            live: self.live.clone(),
            default_input_timeout: self.default_input_timeout,
            stats: self.stats.clone(),
        }
    }
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

impl<S: Send + Sync + 'static> Core<S> {
    /// A core; `default_input_timeout` (seconds) applies when `[limits]` sets none;
    /// `stats` counts connections and refusals.
    pub fn new(store: Store, live: Live<S>, default_input_timeout: u64, stats: Stats) -> Self {
        Self {
            gate: crate::net::gate::Gate::new(&live.limits),
            bans: crate::bans::Bans::new(store.clone(), &live.bans, live.limits.ipv6_prefix, stats.clone()),
            store,
            live: Arc::new(std::sync::RwLock::new(Arc::new(live))),
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
        self.bans.update(&live.bans, live.limits.ipv6_prefix);
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
    }

    /// The admission gate.
    pub fn gate(&self) -> &Arc<crate::net::gate::Gate> {
        &self.gate
    }

    /// The bans.
    pub fn bans(&self) -> &Arc<crate::bans::Bans> {
        &self.bans
    }

    /// The current live settings.
    pub fn live(&self) -> Arc<Live<S>> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A connection's context from the current settings, and the shaper for its stream.
    pub fn context(
        &self,
        shutdown: &tokio_util::sync::CancellationToken,
        watch: crate::net::stress::Watch,
    ) -> (Context<S>, Arc<crate::net::shaping::Shaper>) {
        let live = self.live();
        let ctx = Context {
            store: self.store.clone(),
            settings: live.settings.clone(),
            tls: live.tls.clone(),
            input_timeout: Duration::from_secs(live.limits.input_timeout_or(self.default_input_timeout)),
            session_timeout: Duration::from_secs(live.limits.session_timeout),
            handshake_timeout: Duration::from_secs(live.limits.handshake_timeout),
            limits: live.limits.clone(),
            shutdown: shutdown.clone(),
            watch,
            bans: self.bans.clone(),
        };
        (ctx, live.shaper.clone())
    }

    /// Accepts on `listeners` until `shutdown` is cancelled: each admitted connection
    /// gets its [`Context`] (the live settings of the moment) and its stream wrapped by
    /// the shaper, and is served by `serve(stream, peer, implicit_tls, context)`.
    /// Refused connections get their `refusals` line, or none (a protocol whose server
    /// never speaks first).
    pub async fn accept<F, Fut>(
        &self,
        listeners: Vec<Listener>,
        refusals: Option<Refusals>,
        shutdown: Shutdown,
        serve: F,
    ) where
        F: Fn(Shaped<TcpStream>, SocketAddr, bool, Context<S>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let (core, token) = (self.clone(), shutdown.token.clone());
        let handler = move |stream, peer, implicit_tls, watch| {
            let (ctx, shaper) = core.context(&token, watch);
            serve(shaper.wrap(stream), peer, implicit_tls, ctx)
        };
        tokio::spawn(self.bans.clone().keep_fresh(shutdown.token.clone()));
        crate::net::listener::accept(
            listeners,
            self.gate.clone(),
            Some(self.bans.clone()),
            refusals,
            self.stats.clone(),
            shutdown,
            handler,
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_are_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("while executing migrations: {0}")]
        struct Inner(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("migration: {0}")]
        struct Outer(#[source] Inner);
        let e = anyhow::Error::new(Outer(Inner(std::io::Error::other("1062 duplicate entry"))));
        assert_eq!(super::said_once(&e), "migration: while executing migrations: 1062 duplicate entry");
        let plain = anyhow::Error::new(std::io::Error::other("refused")).context("cannot start");
        assert_eq!(super::said_once(&plain), "cannot start: refused");
    }
}
