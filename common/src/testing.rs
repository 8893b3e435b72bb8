//! Test helpers (feature `test-util`): a throw-away database per test on each backend
//! (style.md P11 (d)), daemons in-process ([`Served`]) and as processes ([`Daemon`]), a
//! line client ([`Client`]) the protocol tests build on.
//!
//! Backends: SQLite always (a temporary file). PostgreSQL and MySQL/MariaDB through admin
//! URLs from the environment, defaulting to the local services:
//!
//! | variable | default |
//! | --- | --- |
//! | `MMMAIL_TEST_POSTGRES` | `postgres://postgres@127.0.0.1:5432/postgres` |
//! | `MMMAIL_TEST_MYSQL` | `mysql://root@127.0.0.1:3306/mysql` |
//!
//! Set a variable to `skip` to leave that backend out. An unreachable backend is skipped
//! with a note on stderr, except when `CI=true`, where it fails the test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::config::{DatabaseConfig, LimitsConfig, Shared};
use crate::daemon::{Config, Daemon as Contract};
use crate::net::listener::Listener;
use crate::shutdown::Shutdown;
use crate::stats::{Stats, StatsConfig};
use crate::store::Store;

/// Shared config sections for tests: server `name`, database `url`, no limits, no
/// counting; a daemon's test config is `DaemonFile::new(shared(..))` with its own
/// section adjusted.
pub fn shared(name: &str, url: &str) -> Shared {
    let mut s = Shared::new(name, DatabaseConfig::from_url(url));
    s.limits = LimitsConfig::unlimited();
    s.stats = StatsConfig::disabled();
    s
}

/// A daemon of this workspace served in-process on loopback ports, made the one way a
/// daemon is made ([`Contract::start`]); stopped when dropped.
pub struct Served<D> {
    /// The plain listener.
    pub addr: SocketAddr,
    /// The implicit-TLS listener, when the config has `[tls]`.
    pub tls_addr: Option<SocketAddr>,
    /// The server (to inspect its state).
    pub server: Arc<D>,
    shutdown: Shutdown,
}

impl<D: Contract> Served<D> {
    /// Prepares the database of `cfg` and serves on `127.0.0.1:0` (and a TLS port when
    /// `cfg` has `[tls]`).
    ///
    /// # Panics
    /// If anything fails.
    pub async fn start(cfg: Config<D>) -> Served<D> {
        Self::start_at(cfg, "127.0.0.1:0").await
    }

    /// As [`start`](Self::start), the plain listener bound to `bind` (`"[::]:0"` for a
    /// dual-stack one).
    ///
    /// # Panics
    /// If anything fails.
    pub async fn start_at(cfg: Config<D>, bind: &str) -> Served<D> {
        let plain = TcpListener::bind(bind).await.expect("bind");
        let addr = plain.local_addr().expect("address");
        let proxies = crate::net::proxy::ProxyNetworks::new(&cfg.listen.proxy_networks);
        let mut listeners = vec![Listener { socket: plain, implicit_tls: false, proxies: proxies.clone() }];
        let mut tls_addr = None;
        if cfg.tls.is_some() {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tls_addr = Some(l.local_addr().expect("address"));
            listeners.push(Listener { socket: l, implicit_tls: true, proxies });
        }
        let store = Store::prepare(&cfg.database).await.expect("prepare database");
        let tls = crate::daemon::load_tls(cfg.tls.as_ref()).expect("tls");
        let server = D::start(&cfg, store, tls, Stats::open(&cfg.stats, D::NAME)).await.expect("start");
        let shutdown = Shutdown::new();
        tokio::spawn(server.clone().serve(listeners, shutdown.clone()));
        Served { addr, tls_addr, server, shutdown }
    }

    /// Stops accepting and waits (10 s at most) for the sessions to end; whether they did.
    pub async fn stop(&self) -> bool {
        self.shutdown.drain(Duration::from_secs(10)).await
    }
}

impl<D> Drop for Served<D> {
    fn drop(&mut self) {
        self.shutdown.token.cancel();
    }
}

/// A line client over any stream: what the SMTP and POP3 test clients build on.
pub struct Client<S> {
    /// The stream, buffered.
    pub io: BufReader<S>,
}

impl Client<TcpStream> {
    /// Connects to `addr`.
    ///
    /// # Panics
    /// If the connection fails.
    pub async fn connect(addr: SocketAddr) -> Self {
        Client { io: BufReader::new(TcpStream::connect(addr).await.expect("connect")) }
    }

    /// Connects from a chosen loopback source address (any of 127.0.0.0/8 works).
    ///
    /// # Panics
    /// If the connection fails.
    pub async fn connect_from(addr: SocketAddr, source: std::net::Ipv4Addr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::from((source, 0))).expect("bind");
        Client { io: BufReader::new(socket.connect(addr).await.expect("connect")) }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// A client over `s`.
    pub fn new(s: S) -> Self {
        Client { io: BufReader::new(s) }
    }

    /// Writes `bytes` and flushes.
    ///
    /// # Panics
    /// On a write error.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("write");
        self.io.get_mut().flush().await.expect("flush");
    }

    /// One line without its CRLF (which it must have), waiting at most 20 s; `None` at
    /// the end of the stream.
    ///
    /// # Panics
    /// On a timeout or a line without CRLF.
    pub async fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(20), self.io.read_until(b'\n', &mut buf))
            .await
            .expect("no line within 20 s")
            .ok()?;
        if n == 0 {
            return None;
        }
        assert!(buf.ends_with(b"\r\n"), "line without CRLF: {buf:?}");
        buf.truncate(buf.len() - 2);
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Whether the server ended the stream in order within 5 s: the end of the stream
    /// after whatever was still unread, on a TLS stream with a `close_notify` alert first
    /// (RFC 8446 §6.1; rustls reports an end without one as an error).
    pub async fn closed_cleanly(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(tokio::time::timeout(Duration::from_secs(5), self.io.read_to_end(&mut rest)).await, Ok(Ok(_)))
    }

    /// Whether the server closed the connection (end of stream within 5 s).
    pub async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(tokio::time::timeout(Duration::from_secs(5), self.io.read(&mut buf)).await, Ok(Ok(0)))
    }
}

/// The three backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
    /// MySQL or MariaDB server.
    MySql,
}

impl Backend {
    /// All three.
    pub const ALL: [Backend; 3] = [Backend::Sqlite, Backend::Postgres, Backend::MySql];

    /// The table name `user` spelled for this backend's SQL.
    pub fn user_table(self) -> &'static str {
        match self {
            Backend::MySql => "`user`",
            _ => "\"user\"",
        }
    }

    /// The SQL for "now" that fits the admin tables' timestamp columns.
    pub fn now(self) -> &'static str {
        match self {
            Backend::Sqlite => "CURRENT_TIMESTAMP",
            _ => "NOW()",
        }
    }
}

/// A migrated database that exists for one test and is dropped with this value.
pub struct TestDb {
    /// Which backend.
    pub backend: Backend,
    /// The database URL (give it to a daemon's config).
    pub url: String,
    /// A store connected to it.
    pub store: Store,
    admin_url: Option<String>,
    name: String,
    _dir: Option<tempfile_dir::Dir>,
}

mod tempfile_dir {
    /// A temporary directory removed on drop (kept tiny to avoid a dependency).
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn random_name() -> String {
    format!("mmmail_t_{}", crate::random_hex(6))
}

/// Whether `CI=true` (or `1`): a missing tool or database then fails a test instead of
/// skipping it.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn admin_url(backend: Backend) -> Option<String> {
    let (var, default) = match backend {
        Backend::Sqlite => return None,
        Backend::Postgres => ("MMMAIL_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres"),
        Backend::MySql => ("MMMAIL_TEST_MYSQL", "mysql://root@127.0.0.1:3306/mysql"),
    };
    match std::env::var(var) {
        Ok(v) if v == "skip" => {
            assert!(!ci(), "{var}=skip is not allowed with CI=true");
            None
        }
        Ok(v) => Some(v),
        Err(_) => Some(default.into()),
    }
}

/// Replaces the database name (the path) of a server URL.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl TestDb {
    /// Creates and migrates a fresh database on `backend`; `None` when that backend is
    /// skipped (see the module docs).
    ///
    /// # Panics
    /// When the backend is unreachable under `CI=true`, or migrations fail.
    pub async fn create(backend: Backend) -> Option<TestDb> {
        let db = Self::create_unmigrated(backend).await?;
        crate::store::migrate::migrate(&db.store).await.expect("migrate test database");
        Some(db)
    }

    /// [`TestDb::create`] without running the migrations: an empty database.
    ///
    /// # Panics
    /// As [`TestDb::create`].
    pub async fn create_unmigrated(backend: Backend) -> Option<TestDb> {
        let name = random_name();
        let (url, admin, dir) = match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).expect("temp dir");
                let path: PathBuf = dir.join("mmmail.db");
                (format!("sqlite://{}", path.display()), None, Some(tempfile_dir::Dir(dir)))
            }
            _ => {
                let admin = admin_url(backend)?;
                let created = match Store::connect(&DatabaseConfig::from_url(admin.clone())).await {
                    Ok(s) => {
                        let r = s.execute_admin_sql(&format!("CREATE DATABASE {name}")).await;
                        s.close().await;
                        r.map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = created {
                    assert!(!ci(), "{backend:?} test database unavailable with CI=true: {e}");
                    eprintln!("note: skipping {backend:?}: {e}");
                    return None;
                }
                (with_database(&admin, &name), Some(admin), None)
            }
        };
        let mut cfg = DatabaseConfig::from_url(url.clone());
        cfg.max_connections = 16;
        let store = Store::connect(&cfg).await.expect("connect test database");
        Some(TestDb { backend, url, store, admin_url: admin, name, _dir: dir })
    }

    /// A migrated database at `url` that the test did not create and does not drop (a
    /// private server's, say).
    ///
    /// # Panics
    /// If it cannot be reached or migrated.
    pub async fn attach(backend: Backend, url: &str) -> TestDb {
        let mut cfg = DatabaseConfig::from_url(url);
        cfg.max_connections = 16;
        let store = Store::prepare(&cfg).await.expect("prepare database");
        TestDb { backend, url: url.to_owned(), store, admin_url: None, name: String::new(), _dir: None }
    }

    /// [`TestDb::create`] for every backend that is not skipped.
    pub async fn all() -> Vec<TestDb> {
        let mut v = Vec::new();
        for b in Backend::ALL {
            if let Some(db) = TestDb::create(b).await {
                v.push(db);
            }
        }
        v
    }

    /// Runs admin SQL, panicking on failure (tests only).
    pub async fn sql(&self, sql: &str) {
        self.store.execute_admin_sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Adds a user with the given `user_passwd` value; returns its id.
    pub async fn add_user(&self, name: &str, passwd: &str) -> i64 {
        let (t, now) = (self.backend.user_table(), self.backend.now());
        self.sql(&format!(
            "INSERT INTO {t} (user_name, user_passwd, user_created) VALUES ('{name}', '{passwd}', {now})"
        ))
        .await;
        self.store.user_password(name).await.expect("query").expect("user just added").id
    }

    /// Adds a box owned by `user` with limits in bytes and messages (0 = unlimited).
    pub async fn add_box(&self, address: &str, user: i64, max_size: i64, max_mails: i64) {
        let now = self.backend.now();
        self.sql(&format!(
            "INSERT INTO box VALUES ('{address}', {user}, {max_size}, 0, {max_mails}, 0, {now}, {now}, {now})"
        ))
        .await;
    }

    /// Adds an alias row.
    pub async fn add_alias(&self, pattern: &str, target: &str, user: i64) {
        let now = self.backend.now();
        self.sql(&format!("INSERT INTO alias VALUES ('{pattern}', '{target}', {user}, {now})")).await;
    }

    /// Adds a `nofrom` row.
    pub async fn add_nofrom(&self, pattern: &str) {
        self.sql(&format!("INSERT INTO nofrom VALUES ('{pattern}')")).await;
    }

    /// The `box_size` and `box_mails` counters of a box (compare with
    /// [`Store::recount`]).
    pub async fn counters(&self, address: &str) -> crate::store::Usage {
        let b = self.store.find_box(address).await.expect("query").expect("box exists");
        crate::store::Usage { bytes: b.size, messages: b.mails }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(admin) = self.admin_url.clone() else { return };
        let (name, backend) = (self.name.clone(), self.backend);
        // Drop runs inside a test's runtime, which is blocked while we join: do the
        // cleanup on a thread and runtime of its own, without touching the test's pool
        // (its connections belong to the blocked runtime). PostgreSQL's FORCE ends them;
        // MySQL drops a database under idle connections.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(s) = Store::connect(&DatabaseConfig::from_url(admin)).await {
                    let sql = match backend {
                        Backend::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                        _ => format!("DROP DATABASE IF EXISTS {name}"),
                    };
                    if let Err(e) = s.execute_admin_sql(&sql).await {
                        eprintln!("warning: could not drop test database {name}: {e}");
                    }
                    s.close().await;
                }
            });
        })
        .join();
    }
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as PEM files.
pub struct TestCert {
    /// Path of the PEM certificate.
    pub cert: PathBuf,
    /// Path of the PEM private key.
    pub key: PathBuf,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl TestCert {
    /// Generates a fresh certificate into `dir`.
    ///
    /// # Panics
    /// If generation or writing fails.
    pub fn generate(dir: &std::path::Path) -> TestCert {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).expect("rcgen");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).expect("write cert");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
        TestCert { cert, key, der: ck.cert.der().to_vec() }
    }

    /// A TLS connector that trusts exactly this certificate.
    ///
    /// # Panics
    /// If the certificate is unusable.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
        let mut roots = RootCertStore::empty();
        roots.add(rustls_pki_types::CertificateDer::from(self.der.clone())).expect("root");
        let cfg = ClientConfig::builder_with_provider(std::sync::Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
    }
}

/// Config text letting a daemon under test run as root (CI runs as root); append it
/// after a config's other sections.
pub const ROOT_OK: &str = "[privileges]\nallow_root = true\n";

/// A daemon running as a real process on a free loopback port, killed on drop.
pub struct Daemon {
    child: std::process::Child,
    /// The port it listens on.
    pub port: u16,
    /// Its standard error.
    pub log: PathBuf,
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

impl Daemon {
    /// Writes `config(port)` to `dir/<program>.toml` and starts `bin -c` that file; waits
    /// until the port accepts connections. Retries with another port if one was taken.
    ///
    /// # Panics
    /// If the daemon does not start.
    pub fn start(bin: &std::path::Path, dir: &std::path::Path, config: impl Fn(u16) -> String) -> Daemon {
        let program = bin.file_name().map_or("daemon".into(), |n| n.to_string_lossy().into_owned());
        for _ in 0..5 {
            let port = free_port();
            let cfg = dir.join(format!("{program}-{port}.toml"));
            std::fs::write(&cfg, config(port)).expect("write config");
            let log = dir.join(format!("{program}-{port}.log"));
            let child = std::process::Command::new(bin)
                .arg("-c")
                .arg(&cfg)
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("spawn daemon");
            let mut d = Daemon { child, port, log };
            if d.wait_ready() {
                return d;
            }
            eprintln!("{program} did not start on {port}: {}", d.log_text());
        }
        panic!("{program} would not start");
    }

    /// Waits up to 20 s until the daemon is serving: its log says "listening", which it
    /// does only after the database is prepared (the port itself is bound earlier, before
    /// privileges are dropped), and the port accepts. False if the process exited first
    /// (for instance because another process holds the port).
    fn wait_ready(&mut self) -> bool {
        for _ in 0..400 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if self.log_text().contains("listening") && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return matches!(self.child.try_wait(), Ok(None));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// What the daemon wrote to standard error so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let _ = std::process::Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status();
    }

    /// Waits up to `limit` for the process to exit; whether it did.
    pub fn wait_exit(&mut self, limit: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + limit;
        while std::time::Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    /// Starts `bin -c config` (an existing file) and waits for `port` to accept.
    ///
    /// # Panics
    /// If the daemon does not start.
    pub fn start_with_file(bin: &std::path::Path, config: &std::path::Path, port: u16, log: PathBuf) -> Daemon {
        let child = std::process::Command::new(bin)
            .arg("-c")
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn daemon");
        let mut d = Daemon { child, port, log };
        assert!(d.wait_ready(), "daemon did not start: {}", d.log_text());
        d
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binary of another workspace package, next to `own` (a binary of the package under
/// test): `cargo test --workspace` builds them all; testing one package alone builds
/// the missing one here.
///
/// # Panics
/// If it cannot be built.
pub fn sibling_bin(own: &std::path::Path, name: &str, package: &str) -> PathBuf {
    let bin = own.parent().expect("binary directory").join(name);
    if !bin.exists() {
        let ok = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-q", "-p", package, "--bin", name])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok && bin.exists(), "could not build {name}");
    }
    bin
}

/// Runs `command` with `stdin` on its standard input (how the tools take passwords) and
/// its output captured. A command that exits before reading its input is not an error
/// here: its status says what happened.
///
/// # Panics
/// If the command cannot be started.
pub fn run_with_stdin(command: &mut std::process::Command, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child =
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start the command");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    child.wait_with_output().expect("wait for the command")
}

/// Whether an external tool is installed; under `CI=true` a missing tool is a failure.
///
/// # Panics
/// Under `CI=true` when the tool is missing.
pub fn have(tool: &str) -> bool {
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(!ci(), "{tool} is required under CI=true");
        eprintln!("note: {tool} not installed; skipping");
    }
    ok
}

/// The keys a config type accepts in `section` (`None`: the top-level section names),
/// asked of the type itself: `base` (a valid config) plus an unknown key is parsed, and
/// serde's "expected one of ..." list is read back.
///
/// # Panics
/// If the probe unexpectedly parses or the message has no list.
pub fn accepted_keys<T: serde::de::DeserializeOwned>(base: &str, section: Option<&str>) -> Vec<String> {
    const PROBE: &str = "zz_probe_zz = 1";
    let text = match section {
        None => format!("{PROBE}\n{base}"),
        // `Some("[name]")` probes an array of tables `[[name]]` through its first table.
        Some(name) => {
            let header = format!("[{name}]\n");
            match base.find(&header) {
                Some(at) => format!("{}{header}{PROBE}\n{}", &base[..at], &base[at + header.len()..]),
                None => format!("{base}\n{header}{PROBE}\n"),
            }
        }
    };
    let Err(e) = toml::from_str::<T>(&text) else { panic!("probe accepted in {section:?}") };
    let msg = e.to_string();
    let list = msg.split_once("expected").map(|(_, l)| l).unwrap_or_else(|| panic!("no key list in {msg}"));
    list.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// A tiny deterministic pseudo-random generator (xorshift64*) for hostile-input tests:
/// a failing seed reproduces exactly.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One byte of `set`.
    pub fn pick(&mut self, set: &[u8]) -> u8 {
        set[self.below(set.len())]
    }
}

/// HAProxy from Debian in TCP mode, sending a PROXY protocol v2 header
/// (`send-proxy-v2`) to each backend: a real proxy in front of a daemon under test. It
/// runs from its own configuration file in `dir`, in the foreground; killed when dropped.
pub struct Haproxy {
    child: std::process::Child,
    /// Its standard error.
    pub log: PathBuf,
}

impl Haproxy {
    /// Listens on 127.0.0.1 at each `(frontend port, backend address)`; waits until every
    /// frontend accepts connections.
    ///
    /// # Panics
    /// If HAProxy does not start.
    pub fn start(dir: &std::path::Path, routes: &[(u16, std::net::SocketAddr)]) -> Haproxy {
        let mut cfg = String::from(
            "global\n    maxconn 100\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n",
        );
        for (i, (port, backend)) in routes.iter().enumerate() {
            cfg.push_str(&format!(
                "listen route{i}\n    bind 127.0.0.1:{port}\n    server daemon {backend} send-proxy-v2\n"
            ));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).expect("write haproxy.cfg");
        let log = dir.join("haproxy.log");
        let child = std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn haproxy");
        let h = Haproxy { child, log };
        for _ in 0..200 {
            if routes.iter().all(|(p, _)| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok()) {
                return h;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("HAProxy did not start: {}", std::fs::read_to_string(&h.log).unwrap_or_default());
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example config `text` (from `etc/`) made checkable on this machine, written into
/// `dir` as `name`: the accounts install.sh creates (`mmmail`, `mmstat`) become `root`
/// where they do not exist here, and `/var/lib/mmmail/` (the SQLite database's
/// directory) becomes `dir`. Every other key is the example's own.
///
/// # Panics
/// If the file cannot be written.
pub fn example_here(text: &str, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let mut text = text.replace("/var/lib/mmmail/", &format!("{}/", dir.display()));
    for account in ["mmmail", "mmstat"] {
        if nix::unistd::User::from_name(account).ok().flatten().is_none() {
            text = text.replace(&format!("user = \"{account}\""), "user = \"root\"");
        }
        if nix::unistd::Group::from_name(account).ok().flatten().is_none() {
            text = text.replace(&format!("group = \"{account}\""), "group = \"root\"");
            text = text.replace(&format!("\"{account}\"]"), "\"root\"]");
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the example");
    path
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_replaced() {
        assert_eq!(super::with_database("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(
            super::with_database("mysql://root@h/mysql?ssl-mode=disabled", "x"),
            "mysql://root@h/x?ssl-mode=disabled"
        );
        assert_eq!(super::with_database("mysql://root@h", "x"), "mysql://root@h/x");
    }
}
