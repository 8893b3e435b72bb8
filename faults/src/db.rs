//! Databases a fault test may break: private PostgreSQL and MariaDB servers (own data
//! directory, own port, killed and restarted at will), an SQLite file anywhere, or a
//! throw-away database on the shared servers for faults that leave the server alone.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::testing::{Backend, TestDb};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what} not ready after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Kills a whole process group with SIGKILL and reaps its leader.
fn kill_group(child: &mut Child) {
    let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
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
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
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
        let log = parent.join("postgres.log");
        let mut pg = PrivatePostgres { data, bin, port: free_port(), uid, gid, log, child: None, starts: 0 };
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
        self.starts += 1;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log");
        let child = Command::new(self.bin.join("postgres"))
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="])
            .args(["-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "full_page_writes=on"])
            .args(["-c", "shared_buffers=16MB", "-c", "max_wal_size=32MB", "-c", "min_wal_size=2MB"])
            .args(["-c", "max_connections=200"])
            .uid(self.uid)
            .gid(self.gid)
            .process_group(0)
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
        let port = self.port.to_string();
        wait_for("private PostgreSQL", Duration::from_secs(60), || {
            quiet(Command::new("pg_isready").args(["-q", "-h", "127.0.0.1", "-p", &port]))
        });
    }

    /// Whether the server process is still there (a full disk can make it stop).
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL to the postmaster and every backend at once.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(&mut c);
        }
    }

    /// How many times the server was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// The URL of database `mmmail`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/mmmail", self.port)
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.kill();
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
    child: Option<Child>,
    starts: u32,
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
        let mut my = PrivateMariaDb { data, port: free_port(), log, child: None, starts: 0 };
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
        self.starts += 1;
        let child = Command::new("/usr/sbin/mariadbd")
            .args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1", "--skip-log-bin"])
            .arg(format!("--datadir={}", self.data.display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", self.data.join("sock").display()))
            .arg(format!("--pid-file={}", self.data.join("pid").display()))
            .arg(format!("--log-error={}", self.log.display()))
            .args(INNODB)
            .args(["--innodb-flush-method=fsync", "--max-connections=300"])
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mariadbd");
        self.child = Some(child);
        let port = format!("-P{}", self.port);
        wait_for("private MariaDB", Duration::from_secs(60), || {
            quiet(Command::new("mysqladmin").args(["-h127.0.0.1", &port, "-uroot", "ping"]))
        });
    }

    /// Whether the server process is still there.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL to the server.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(&mut c);
        }
    }

    /// How many times the server was started.
    pub fn starts(&self) -> u32 {
        self.starts
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

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        self.kill();
    }
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
            Database::Postgres(pg) => pg.kill(),
            Database::MariaDb(my) => my.kill(),
            _ => {}
        }
    }

    /// Starts the private server again if it is not running; returns whether it had to.
    pub fn ensure_running(&mut self) -> bool {
        match self {
            Database::Postgres(pg) => {
                if pg.running() {
                    return false;
                }
                pg.kill();
                pg.start();
                true
            }
            Database::MariaDb(my) => {
                if my.running() {
                    return false;
                }
                my.kill();
                my.start();
                true
            }
            _ => false,
        }
    }

    /// The private server's log (empty for the others).
    pub fn server_log(&self) -> String {
        match self {
            Database::Postgres(pg) => pg.log_text(),
            Database::MariaDb(my) => my.log_text(),
            _ => String::new(),
        }
    }
}
