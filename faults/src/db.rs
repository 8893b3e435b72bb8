//! Databases a fault test may break: private PostgreSQL and MariaDB servers (own data
//! directory, own port, killed and restarted at will), an SQLite file anywhere, or a
//! throw-away database on the shared servers for faults that leave the server alone.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::testing::{Backend, TestDb};

/// A loopback port for a database server of ours (client, Galera group, IST or SST
/// port): free now, below the kernel's ephemeral range, and never handed out twice by
/// this process. Below that range, an outgoing connection (a Galera link, a daemon's
/// pool) cannot take it between this call and the server's bind, as it can take a port
/// that `bind(":0")` found free; and no two servers of one test binary get the same one.
///
/// # Panics
/// If no port in the range is free.
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse::<u32>().ok()))
        .unwrap_or(32768);
    let (first, span) = (10_000_u32, low.saturating_sub(10_000).max(1000));
    // Each test binary starts at its own place, so that two at once rarely meet.
    let _ = NEXT.compare_exchange(0, std::process::id() % span + 1, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..span {
        let port = first + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let Ok(port) = u16::try_from(port) else { continue };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {first} and {}", first + span);
}

pub(crate) fn wait_for(what: &str, limit: Duration, ready: impl FnMut() -> bool) {
    assert!(waited(limit, ready), "{what} not ready after {limit:?}");
}

/// Whether `ready` became true within `limit` (asked every 100 ms).
pub(crate) fn waited(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// The last `lines` lines of a log file, for a failure message.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// A database server process of our own: started in a process group of its own, so
/// that a kill reaches every process of it at once; its log kept across restarts.
pub struct Proc {
    child: Option<Child>,
    starts: u32,
    log: PathBuf,
}

impl Proc {
    pub(crate) fn new(log: PathBuf) -> Proc {
        Proc { child: None, starts: 0, log }
    }

    /// Spawns `cmd` (its standard error appended to the log) and waits up to 60 s until
    /// `ready`.
    ///
    /// # Panics
    /// If it is not ready by then, with the end of its standard error.
    pub(crate) fn start(&mut self, what: &str, cmd: &mut Command, ready: impl FnMut() -> bool) {
        let limit = Duration::from_secs(60);
        if !self.start_within(cmd, limit, ready) {
            panic!("{what} not ready after {limit:?}; its standard error ends:\n{}", self.log_tail(30));
        }
    }

    /// Spawns `cmd` (its standard error appended to the log); whether it became `ready`
    /// within `limit`.
    pub(crate) fn start_within(&mut self, cmd: &mut Command, limit: Duration, ready: impl FnMut() -> bool) -> bool {
        self.starts += 1;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log");
        let child = cmd.process_group(0).stdout(Stdio::null()).stderr(log).spawn().expect("spawn database server");
        self.child = Some(child);
        waited(limit, ready)
    }

    /// Whether the server process is still there (a full disk can make it stop).
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL to the whole process group (a server and all its workers); reaps the
    /// leader.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// What it wrote to standard error so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its standard error.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// How many times the server was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL server of our own: `initdb` into `parent/pg` (owned by the `postgres`
/// user, as the server refuses to run as root), TCP on 127.0.0.1 only, 1 MiB WAL
/// segments so that it fits a small disk. Killed with its whole process group.
pub struct PrivatePostgres {
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    uid: u32,
    gid: u32,
    /// Whether TCP connections must use TLS ([`PrivatePostgres::require_tls`]).
    tls: bool,
    /// The server process.
    pub proc: Proc,
}

impl PrivatePostgres {
    /// Whether a PostgreSQL server installation is here.
    pub fn available() -> bool {
        Self::bindir().is_some() && nix::unistd::User::from_name("postgres").ok().flatten().is_some()
    }

    fn bindir() -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|d| d.join("postgres").exists() && d.join("initdb").exists())
            .collect();
        dirs.sort();
        dirs.pop()
    }

    /// Creates the cluster under `parent` (which must be reachable by the `postgres`
    /// user) and starts it.
    ///
    /// # Panics
    /// If `initdb` or the start fails.
    pub fn create(parent: &Path) -> PrivatePostgres {
        let bin = Self::bindir().expect("PostgreSQL server binaries");
        let user = nix::unistd::User::from_name("postgres").ok().flatten().expect("user postgres");
        let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
        let data = parent.join("pg");
        std::fs::create_dir_all(&data).expect("data dir");
        let _ = nix::unistd::chown(&data, Some(user.uid), Some(user.gid));
        let ok = quiet(
            Command::new(bin.join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "-N", "--wal-segsize=1", "-E", "UTF8", "-D"])
                .arg(&data)
                .uid(uid)
                .gid(gid)
                .current_dir("/"),
        );
        assert!(ok, "initdb {}", data.display());
        let proc = Proc::new(parent.join("postgres.log"));
        let mut pg = PrivatePostgres { data, bin, port: free_port(), uid, gid, tls: false, proc };
        pg.start();
        let ok = quiet(
            Command::new("psql")
                .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "postgres", "-d", "postgres", "-c"])
                .arg("CREATE DATABASE mmmail"),
        );
        assert!(ok, "create database on the private PostgreSQL");
        pg
    }

    /// Starts the server (after [`PrivatePostgres::kill`]: with crash recovery) and waits
    /// until it accepts connections.
    ///
    /// # Panics
    /// If it is not up within 60 s.
    pub fn start(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-p", &port])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="])
            .args(["-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "full_page_writes=on"])
            .args(["-c", "shared_buffers=16MB", "-c", "max_wal_size=32MB", "-c", "min_wal_size=2MB"])
            .args(["-c", "max_connections=200"])
            .args(["-c", if self.tls { "ssl=on" } else { "ssl=off" }])
            .uid(self.uid)
            .gid(self.gid)
            .current_dir("/");
        self.proc.start("private PostgreSQL", &mut cmd, || {
            quiet(Command::new("pg_isready").args(["-q", "-h", "127.0.0.1", "-p", &port]))
        });
    }

    /// Restarts the server taking TCP connections over TLS only: a self-signed
    /// certificate made by `openssl`, and `hostssl` the only line of `pg_hba.conf`.
    ///
    /// # Panics
    /// If `openssl` fails, or the server is not back within 60 s.
    pub fn require_tls(&mut self) {
        self.proc.kill();
        let (cert, key) = (self.data.join("server.crt"), self.data.join("server.key"));
        let made = quiet(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        );
        assert!(made, "openssl req: a self-signed certificate");
        for f in [&cert, &key] {
            let _ = nix::unistd::chown(f, Some(self.uid.into()), Some(self.gid.into()));
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod server.key");
        std::fs::write(self.data.join("pg_hba.conf"), "hostssl all all 127.0.0.1/32 trust\n").expect("pg_hba.conf");
        self.tls = true;
        self.start();
    }

    /// The URL of database `mmmail`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/mmmail", self.port)
    }
}

/// A MariaDB server of our own: `mariadb-install-db` into `parent/my`, run as root
/// (`--user=root`) on 127.0.0.1 only, small InnoDB files so that it fits a small disk.
/// The system tablespace is preallocated (24 MiB): with the undo log inside it, a full
/// disk then fails writes with `1114 table is full` instead of aborting the server
/// during a rollback (which MariaDB 10.11 does when the undo log cannot grow).
pub struct PrivateMariaDb {
    data: PathBuf,
    port: u16,
    log: PathBuf,
    /// The server process.
    pub proc: Proc,
}

const INNODB: [&str; 5] = [
    "--innodb-log-file-size=8M",
    "--innodb-data-file-path=ibdata1:24M:autoextend",
    "--innodb-autoextend-increment=1",
    "--innodb-undo-tablespaces=0",
    "--innodb-buffer-pool-size=32M",
];

impl PrivateMariaDb {
    /// Whether a MariaDB server installation is here.
    pub fn available() -> bool {
        Path::new("/usr/sbin/mariadbd").exists()
            && quiet(Command::new("sh").args(["-c", "command -v mariadb-install-db && command -v mysqladmin"]))
    }

    /// Creates the data directory under `parent` and starts the server.
    ///
    /// # Panics
    /// If the installation or the start fails.
    pub fn create(parent: &Path) -> PrivateMariaDb {
        let data = parent.join("my");
        let ok = quiet(
            Command::new("mariadb-install-db")
                .args(["--no-defaults", "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"])
                .arg(format!("--datadir={}", data.display()))
                .args(INNODB),
        );
        assert!(ok, "mariadb-install-db {}", data.display());
        let log = parent.join("mariadb.log");
        let mut my = PrivateMariaDb { data, port: free_port(), proc: Proc::new(parent.join("mariadbd.stderr")), log };
        my.start();
        let ok = quiet(
            Command::new("mariadb")
                .args(["-h127.0.0.1", &format!("-P{}", my.port), "-uroot", "-e"])
                .arg("CREATE DATABASE mmmail CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"),
        );
        assert!(ok, "create database on the private MariaDB");
        my
    }

    /// Starts the server (after a kill: with InnoDB crash recovery) and waits until it
    /// answers.
    ///
    /// # Panics
    /// If it is not up within 60 s.
    pub fn start(&mut self) {
        let mut cmd = mariadbd("root", &self.data, self.port, &self.log);
        cmd.args(INNODB);
        let port = format!("-P{}", self.port);
        self.proc.start("private MariaDB", &mut cmd, || {
            quiet(Command::new("mysqladmin").args(["-h127.0.0.1", &port, "-uroot", "ping"]))
        });
    }

    /// The URL of database `mmmail`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/mmmail", self.port)
    }

    /// The server's error log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A `mariadbd` of our own as `user`: no option files, TCP on 127.0.0.1:`port` only, no
/// binary log, its socket and pid file in `data`, errors to `log`, fsync'd InnoDB and
/// room for 300 connections. Callers add their storage and cluster options.
pub(crate) fn mariadbd(user: &str, data: &Path, port: u16, log: &Path) -> Command {
    let mut cmd = Command::new("/usr/sbin/mariadbd");
    cmd.arg("--no-defaults")
        .arg(format!("--user={user}"))
        .args(["--bind-address=127.0.0.1", "--skip-log-bin"])
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg(format!("--socket={}", data.join("sock").display()))
        .arg(format!("--pid-file={}", data.join("pid").display()))
        .arg(format!("--log-error={}", log.display()))
        .args(["--innodb-flush-method=fsync", "--max-connections=300"])
        .current_dir("/");
    cmd
}

/// The database a scenario runs on.
pub enum Database {
    /// A throw-away database on the shared server (or an SQLite file in a temporary
    /// directory): for faults that leave the database server alone.
    Shared(TestDb),
    /// An SQLite file at this path (on a disk the test controls).
    SqliteFile(PathBuf),
    /// A private PostgreSQL server.
    Postgres(PrivatePostgres),
    /// A private MariaDB server.
    MariaDb(PrivateMariaDb),
}

impl Database {
    /// Its URL for the daemons' `[database] url`.
    pub fn url(&self) -> String {
        match self {
            Database::Shared(db) => db.url.clone(),
            Database::SqliteFile(p) => format!("sqlite://{}", p.display()),
            Database::Postgres(pg) => pg.url(),
            Database::MariaDb(my) => my.url(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        match self {
            Database::Shared(db) => db.backend,
            Database::SqliteFile(_) => Backend::Sqlite,
            Database::Postgres(_) => Backend::Postgres,
            Database::MariaDb(_) => Backend::MySql,
        }
    }

    /// Kills the private server (nothing for the others).
    pub fn kill(&mut self) {
        match self {
            Database::Postgres(pg) => pg.proc.kill(),
            Database::MariaDb(my) => my.proc.kill(),
            _ => {}
        }
    }

    /// Starts the private server again if it is not running; returns whether it had to.
    pub fn ensure_running(&mut self) -> bool {
        match self {
            Database::Postgres(pg) => {
                if pg.proc.running() {
                    return false;
                }
                pg.proc.kill();
                pg.start();
                true
            }
            Database::MariaDb(my) => {
                if my.proc.running() {
                    return false;
                }
                my.proc.kill();
                my.start();
                true
            }
            _ => false,
        }
    }

    /// The private server's log (empty for the others).
    pub fn server_log(&self) -> String {
        match self {
            Database::Postgres(pg) => pg.proc.log_text(),
            Database::MariaDb(my) => my.log_text(),
            _ => String::new(),
        }
    }
}
