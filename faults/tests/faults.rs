//! The fault matrix (issue 18): every daemon under load, on every backend, through
//! kill -9 of the daemons, the database killed and restarted, and a full disk; then
//! every reply checked against the database (see `faults::scenario::Scenario::verify`).
//! Each test adds its rows to `target/fault-report.md`.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::time::{Duration, Instant};

use common::testing::{Backend, TestDb};
use faults::db::{Database, PrivateMariaDb, PrivatePostgres};
use faults::disk::Tmpfs;
use faults::scenario::{Scenario, Which};

/// Clients per daemon: SMTP senders, POP3 readers, TMTP posters.
const LOAD: (usize, usize, usize) = (4, 3, 2);
/// Acknowledgements each daemon's clients must get before a fault, and after it.
const PROGRESS: usize = 15;

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// kill -9 of all three daemons at once under load, then a restart: on the shared
/// servers (the database is not touched).
async fn kill_9(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else { return };
    let mut sc = Scenario::start(Database::Shared(db), "kill -9 of the daemon").await;
    let load = sc.load(LOAD.0, LOAD.1, LOAD.2);
    assert!(load.progress(PROGRESS, Duration::from_secs(90)).await, "no progress before the fault:\n{}", sc.logs());
    for w in Which::ALL {
        sc.kill(w);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for w in Which::ALL {
        sc.restart(w).await;
    }
    let t = Instant::now();
    let recovered = load.recovered_after(t, Duration::from_secs(60)).await;
    assert!(load.progress(PROGRESS, Duration::from_secs(60)).await, "no progress after the restart:\n{}", sc.logs());
    let load = load.finish().await;
    sc.verify(&load, &recovered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_sqlite() {
    kill_9(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_postgres() {
    kill_9(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_mariadb() {
    kill_9(Backend::MySql).await;
}

/// A directory the private PostgreSQL (user `postgres`) can reach.
fn reachable_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix("mmmail-fault-db-").tempdir().expect("temp dir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// The private server killed (SIGKILL to every process of it) under load, left down for
/// a few seconds, started again; the daemons are never restarted.
async fn database_restart(db: Database) {
    let mut sc = Scenario::start(db, "database killed, restarted").await;
    let load = sc.load(LOAD.0, LOAD.1, LOAD.2);
    assert!(load.progress(PROGRESS, Duration::from_secs(90)).await, "no progress before the fault:\n{}", sc.logs());
    blocking(|| sc.db.kill());
    tokio::time::sleep(Duration::from_secs(3)).await;
    blocking(|| sc.db.ensure_running());
    let t = Instant::now();
    let recovered = load.recovered_after(t, Duration::from_secs(90)).await;
    assert!(load.progress(PROGRESS, Duration::from_secs(60)).await, "no progress after the restart:\n{}", sc.logs());
    let load = load.finish().await;
    sc.verify(&load, &recovered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_and_restarted_under_load() {
    if !faults::root_or_skip("postgres_killed_and_restarted_under_load") || !PrivatePostgres::available() {
        assert!(!faults::ci() || PrivatePostgres::available(), "PostgreSQL server binaries are required under CI=true");
        return;
    }
    let dir = reachable_dir();
    let pg = blocking(|| PrivatePostgres::create(dir.path()));
    database_restart(Database::Postgres(pg)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_killed_and_restarted_under_load() {
    if !faults::root_or_skip("mariadb_killed_and_restarted_under_load") || !PrivateMariaDb::available() {
        assert!(!faults::ci() || PrivateMariaDb::available(), "MariaDB server binaries are required under CI=true");
        return;
    }
    let dir = reachable_dir();
    let my = blocking(|| PrivateMariaDb::create(dir.path()));
    database_restart(Database::MariaDb(my)).await;
}

/// The database's disk filled under load until the SMTP clients were refused for a
/// while, then freed; no daemon is restarted (a database server that stopped because
/// of the full disk is started again, as its service manager would). At the end every
/// daemon is killed with SIGKILL before the check, so whatever was acknowledged but
/// not really committed would be lost.
async fn disk_full(fs: Tmpfs, db: Database) {
    let mut sc = Scenario::start(db, "disk full, then freed").await;
    let load = sc.load(LOAD.0, LOAD.1, LOAD.2);
    assert!(load.progress(PROGRESS, Duration::from_secs(90)).await, "no progress before the fault:\n{}", sc.logs());
    let refused = load.smtp.refused();
    blocking(|| fs.fill());
    let start = Instant::now();
    // MariaDB refuses only once InnoDB needs space it does not already hold: it first
    // writes into free pages of its files, and on a machine loaded by other tests the
    // slowed intake took more than 30 s to use them up.
    while load.smtp.refused() < refused + 5 && start.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refusals = load.smtp.refused() - refused;
    // Keep the disk full a little longer: the acknowledged-but-lost case needs traffic
    // after the first failure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    fs.release();
    let t = Instant::now();
    let restarted = blocking(|| sc.db.ensure_running());
    if restarted {
        eprintln!("note: the database server stopped on the full disk and was started again");
    }
    let recovered = load.recovered_after(t, Duration::from_secs(60)).await;
    let progress = load.progress(PROGRESS, Duration::from_secs(30)).await;
    let load = load.finish().await;
    assert!(refusals > 0, "the full disk refused no SMTP message: the fault did not happen");
    // Let sessions that ended without QUIT release their locks, then SIGKILL.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for w in Which::ALL {
        sc.kill(w);
    }
    sc.verify(&load, &recovered).await;
    assert!(progress, "no progress after space came back: {recovered:?}\n{}", sc.logs());
    drop(sc);
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_loses_nothing() {
    if !faults::root_or_skip("sqlite_disk_full_loses_nothing") {
        return;
    }
    let fs = Tmpfs::mount(24);
    let path = fs.path().join("mmmail.db");
    disk_full(fs, Database::SqliteFile(path)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_disk_full_loses_nothing() {
    if !faults::root_or_skip("postgres_disk_full_loses_nothing") || !PrivatePostgres::available() {
        assert!(!faults::ci() || PrivatePostgres::available(), "PostgreSQL server binaries are required under CI=true");
        return;
    }
    let fs = Tmpfs::mount(64);
    let pg = blocking(|| PrivatePostgres::create(fs.path()));
    disk_full(fs, Database::Postgres(pg)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_disk_full_loses_nothing() {
    if !faults::root_or_skip("mariadb_disk_full_loses_nothing") || !PrivateMariaDb::available() {
        assert!(!faults::ci() || PrivateMariaDb::available(), "MariaDB server binaries are required under CI=true");
        return;
    }
    let fs = Tmpfs::mount(96);
    let my = blocking(|| PrivateMariaDb::create(fs.path()));
    disk_full(fs, Database::MariaDb(my)).await;
}

/// store/health.rs: once an operation has found the server gone, the next ones are
/// answered at once (`StoreError::Unreachable`) instead of each waiting out the pool's
/// `acquire_timeout` (5 s here); when the server is back, operations succeed again
/// without a new store.
async fn down_server_fails_fast(mut db: Database) {
    let mut cfg = common::config::DatabaseConfig::from_url(db.url());
    cfg.acquire_timeout = 5;
    let store = common::Store::prepare(&cfg).await.unwrap();
    store.maildrop("nobody@fault.test").await.unwrap();
    blocking(|| db.kill());
    assert!(store.maildrop("nobody@fault.test").await.is_err(), "the server is gone");
    let t = Instant::now();
    let e = store.maildrop("nobody@fault.test").await.unwrap_err();
    let took = t.elapsed();
    assert!(matches!(e, common::StoreError::Unreachable { .. }), "{e}");
    assert!(took < Duration::from_secs(3), "answered after {took:?}, not at once");
    blocking(|| db.ensure_running());
    let back = Instant::now();
    while store.maildrop("nobody@fault.test").await.is_err() {
        assert!(back.elapsed() < Duration::from_secs(20), "no operation succeeds after the server is back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_fails_fast() {
    if !faults::root_or_skip("postgres_down_fails_fast") || !PrivatePostgres::available() {
        assert!(!faults::ci() || PrivatePostgres::available(), "PostgreSQL server binaries are required under CI=true");
        return;
    }
    let dir = reachable_dir();
    let pg = blocking(|| PrivatePostgres::create(dir.path()));
    down_server_fails_fast(Database::Postgres(pg)).await;
}

/// A PostgreSQL server on loopback that takes connections over TLS only is still reached
/// from a URL that names no TLS mode: there the daemons try without TLS first
/// (`common::store::plain_first`), and with TLS when the server refuses that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_demanding_tls_on_loopback_is_reached_over_tls() {
    if !faults::root_or_skip("postgres_demanding_tls_on_loopback_is_reached_over_tls") || !PrivatePostgres::available()
    {
        assert!(!faults::ci() || PrivatePostgres::available(), "PostgreSQL server binaries are required under CI=true");
        return;
    }
    let dir = reachable_dir();
    let mut pg = blocking(|| PrivatePostgres::create(dir.path()));
    blocking(|| pg.require_tls());
    let store = common::Store::connect(&common::config::DatabaseConfig::from_url(pg.url())).await.unwrap();
    let common::Store::Postgres(pool) = &store else { panic!("a PostgreSQL store") };
    let (tls,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetch_one(pool).await.unwrap();
    assert!(tls, "the connection uses TLS");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_down_fails_fast() {
    if !faults::root_or_skip("mariadb_down_fails_fast") || !PrivateMariaDb::available() {
        assert!(!faults::ci() || PrivateMariaDb::available(), "MariaDB server binaries are required under CI=true");
        return;
    }
    let dir = reachable_dir();
    let my = blocking(|| PrivateMariaDb::create(dir.path()));
    down_server_fails_fast(Database::MariaDb(my)).await;
}
