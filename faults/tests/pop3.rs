//! POP3 deletions and maildrop locks under faults (issue 18): sessions quitting at the
//! same moment on SQLite, a session whose lease was taken over while it was stopped, and
//! a lock that a database outage kept from being released.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::store::{Delivery, MailCopy};
use common::testing::{Backend, Daemon, ROOT_OK, TestDb};
use faults::clients::exchange;
use tokio::io::BufReader;
use tokio::net::TcpStream;

const PASSWORD: &str = "pop-password";

fn config(url: &str, lease: u64) -> impl Fn(u16) -> String + Send + use<> {
    let url = url.to_owned();
    move |port| {
        format!(
            "[server]\nname = \"pop.fault.test\"\n[database]\nurl = \"{url}\"\nacquire_timeout = 3\n[listen]\naddresses = [\"127.0.0.1:{port}\"]\n\
             [limits]\nmax_per_address = 0\nconnection_rate = 0\nerror_delay = 0\n[stats]\nenabled = false\n\
             [pop3d]\nlock_lease = {lease}\nhash_concurrency = 16\n{ROOT_OK}"
        )
    }
}

async fn start(url: &str, lease: u64) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (d, cfg) = (dir.path().to_path_buf(), config(url, lease));
    let daemon =
        tokio::task::spawn_blocking(move || Daemon::start(&faults::bin("mmpop3d", "pop3d"), &d, cfg)).await.unwrap();
    (daemon, dir)
}

/// Boxes `box-0..n@fault.test` of one user, `per` messages each.
async fn fill(db: &TestDb, boxes: usize, per: usize) {
    let uid = db.add_user("popper", &common::password::legacy_md5(PASSWORD.as_bytes())).await;
    for b in 0..boxes {
        let address = format!("box-{b}@fault.test");
        db.add_box(&address, uid, 0, 0).await;
        for m in 0..per {
            let copy = MailCopy { box_address: address.clone(), uid: format!("b{b}m{m}"), trace: Vec::new() };
            db.store.deliver(&Delivery { body: b"Subject: x\r\n\r\nhello\r\n", copies: vec![copy] }).await.unwrap();
        }
    }
}

type Conn = BufReader<TcpStream>;

/// Logs in to `box`; the reply to PASS.
async fn login(addr: SocketAddr, address: &str) -> (Conn, String) {
    let mut c = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let greeting = exchange(&mut c, b"").await.unwrap();
    assert!(greeting.starts_with("+OK"), "{greeting}");
    let r = exchange(&mut c, format!("USER {address}\r\n").as_bytes()).await.unwrap();
    assert!(r.starts_with("+OK"), "{r}");
    let r = exchange(&mut c, format!("PASS {PASSWORD}\r\n").as_bytes()).await.unwrap();
    (c, r)
}

async fn dele(c: &mut Conn, n: usize) {
    for i in 1..=n {
        let r = exchange(c, format!("DELE {i}\r\n").as_bytes()).await.unwrap();
        assert!(r.starts_with("+OK"), "{r}");
    }
}

async fn left(db: &TestDb, address: &str) -> i64 {
    db.store.recount(address).await.unwrap().messages
}

/// RFC 1939 §6: QUIT in the TRANSACTION state commits the deletions. Ten sessions on ten
/// boxes quitting at the same moment must all commit (on SQLite a deferred write
/// transaction could not take the write lock once another one committed, and answered
/// `-ERR [SYS/TEMP]`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_sessions_quitting_together_all_commit_on_sqlite() {
    const N: usize = 10;
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    fill(&db, N, 12).await;
    let (daemon, _dir) = start(&db.url, 60).await;
    for round in 0..3 {
        let mut sessions = Vec::new();
        for b in 0..N {
            let (mut c, r) = login(daemon.addr(), &format!("box-{b}@fault.test")).await;
            assert!(r.starts_with("+OK"), "{r}");
            dele(&mut c, 4).await;
            sessions.push(c);
        }
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(N));
        let quits: Vec<_> = sessions
            .into_iter()
            .map(|mut c| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    exchange(&mut c, b"QUIT\r\n").await.unwrap()
                })
            })
            .collect();
        let mut failed = Vec::new();
        for q in quits {
            let r = q.await.unwrap();
            if !r.starts_with("+OK") {
                failed.push(r);
            }
        }
        assert!(failed.is_empty(), "round {round}: {} of {N} QUITs failed: {failed:?}", failed.len());
        for b in 0..N {
            assert_eq!(left(&db, &format!("box-{b}@fault.test")).await, 12 - 4 * (round + 1) as i64);
        }
    }
    assert!(!daemon.log_text().contains("panicked"));
}

/// A session whose lease expired while its process was stopped, and which another
/// mmpop3d took over meanwhile, must not delete at QUIT: `-ERR [SYS/TEMP] Maildrop lock
/// lost`, and every message stays.
async fn lease_enforced_at_quit(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else { return };
    fill(&db, 1, 5).await;
    let lease = 3;
    let (a, _da) = start(&db.url, lease).await;
    let (b, _db) = start(&db.url, lease).await;
    let (mut first, r) = login(a.addr(), "box-0@fault.test").await;
    assert!(r.starts_with("+OK"), "{r}");
    dele(&mut first, 3).await;
    a.signal("STOP");
    tokio::time::sleep(Duration::from_secs(lease + 2)).await;
    let (mut second, r) = login(b.addr(), "box-0@fault.test").await;
    assert!(r.starts_with("+OK"), "the expired lease was not taken over: {r}");
    // QUIT is waiting when the stopped process resumes, before its lease renewal can
    // notice the loss.
    use tokio::io::AsyncWriteExt;
    first.get_mut().write_all(b"QUIT\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.signal("CONT");
    let quit = exchange(&mut first, b"").await.unwrap();
    assert!(quit.starts_with("-ERR [SYS/TEMP] Maildrop lock lost"), "{backend:?}: {quit}");
    assert_eq!(left(&db, "box-0@fault.test").await, 5, "{backend:?}: deleted without the lease");
    // The session that holds the box works on.
    dele(&mut second, 1).await;
    let quit = exchange(&mut second, b"QUIT\r\n").await.unwrap();
    assert!(quit.starts_with("+OK"), "{quit}");
    assert_eq!(left(&db, "box-0@fault.test").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_enforced_at_quit_sqlite() {
    lease_enforced_at_quit(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_enforced_at_quit_postgres() {
    lease_enforced_at_quit(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_enforced_at_quit_mariadb() {
    lease_enforced_at_quit(Backend::MySql).await;
}

/// A QUIT during a database outage cannot commit (`-ERR [SYS/TEMP]`, nothing deleted)
/// and cannot release the lock; the lock must go as soon as the database answers again,
/// not a whole lease later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_kept_by_an_outage_goes_when_the_database_is_back() {
    use faults::db::PrivatePostgres;
    if !faults::root_or_skip("a_lock_kept_by_an_outage_goes_when_the_database_is_back") {
        return;
    }
    let dir = tempfile::Builder::new().prefix("mmmail-fault-db-").tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut pg = tokio::task::block_in_place(|| PrivatePostgres::create(dir.path()));
    let url = pg.url();
    let db = TestDb::attach(Backend::Postgres, &url).await;
    fill(&db, 1, 3).await;
    let lease = 120;
    let (daemon, _d) = start(&url, lease).await;
    let (mut c, r) = login(daemon.addr(), "box-0@fault.test").await;
    assert!(r.starts_with("+OK"), "{r}");
    dele(&mut c, 2).await;
    tokio::task::block_in_place(|| pg.proc.kill());
    let quit = exchange(&mut c, b"QUIT\r\n").await.unwrap();
    assert!(quit.starts_with("-ERR [SYS/TEMP]"), "{quit}");
    tokio::task::block_in_place(|| pg.start());
    let back = Instant::now();
    loop {
        let (mut c, r) = login(daemon.addr(), "box-0@fault.test").await;
        if r.starts_with("+OK") {
            let _ = exchange(&mut c, b"QUIT\r\n").await;
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "the lock outlived the outage by over 20 s (lease {lease} s): {r}\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("lock released {:.1} s after the database came back", back.elapsed().as_secs_f64());
    assert_eq!(left(&db, "box-0@fault.test").await, 3, "the failed QUIT deleted something");
    assert!(!daemon.log_text().contains("panicked"));
}
