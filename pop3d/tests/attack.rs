//! Under attack, real users still get in (issue 13): password guessing from many
//! addresses while a legitimate user logs in; bans made by one daemon refusing the
//! address at every daemon on the database (two mmpop3d and an mmsmtpd); the allow-list.
//! Outcomes only (served, refused, banned); the timings are `scripts/bench-attack`'s.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::testing::{Backend, TestDb};
use support::{Client, PASSWORD, Pop3, Server, config, seed};

fn banning(cfg: &mut pop3d::config::Config, allow: &[&str]) {
    cfg.bans.login_failures = 3;
    cfg.bans.allow = allow.iter().map(|n| n.parse().unwrap()).collect();
}

/// Logs in from `from` with `password`; the reply to PASS, or what ended the session.
async fn attempt(addr: std::net::SocketAddr, from: Ipv4Addr, password: &str) -> String {
    let mut c = Client::connect_from(addr, from).await;
    let Some(greeting) = c.line().await else { return "closed".into() };
    if !greeting.starts_with("+OK") {
        return greeting;
    }
    c.cmd("USER mmondor@example.org").await;
    c.cmd(&format!("PASS {password}")).await
}

/// Waits (10 s at most: bans are read every 5 s) until `from` is refused at `addr`.
async fn refused_at(addr: std::net::SocketAddr, from: Ipv4Addr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Client::connect_from(addr, from).await;
        let line = c.line().await.unwrap_or_default();
        if line.contains("Too many failures") || Instant::now() > deadline {
            return line;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn failed_logins_ban_the_address_at_every_daemon_on_the_database() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let mut cfg = config(&db.url);
    banning(&mut cfg, &[]);
    let a = Server::start(cfg.clone()).await;
    let b = Server::start(cfg).await;
    let mut smtp_cfg = smtpd::config::Config::new(common::testing::shared("mx.example.org", &db.url));
    smtp_cfg.bans.allow = Vec::new();
    let smtp = common::testing::Served::<smtpd::Server>::start(smtp_cfg).await;

    let attacker = Ipv4Addr::new(127, 0, 0, 21);
    assert_eq!(attempt(a.addr, attacker, "guess 1").await, "-ERR [AUTH] Invalid login");
    assert_eq!(attempt(a.addr, attacker, "guess 2").await, "-ERR [AUTH] Invalid login");
    // The third failure bans: this session ends with the reason.
    assert_eq!(
        attempt(a.addr, attacker, "guess 3").await,
        "-ERR [SYS/TEMP] Too many failures from your address, try again later"
    );
    // Refused at connect, here at once and at the other daemons once they have read it.
    let line = refused_at(a.addr, attacker).await;
    assert_eq!(line, "-ERR [SYS/TEMP] Too many failures from your address, try again later");
    assert!(refused_at(b.addr, attacker).await.contains("Too many failures"), "the other mmpop3d");
    let smtp_line = refused_at(smtp.addr, attacker).await;
    assert!(smtp_line.starts_with("421 4.7.0 mx.example.org Too many failures"), "{smtp_line}");
    // The right password does not help a banned address; another address logs in.
    assert!(attempt(b.addr, attacker, PASSWORD).await.contains("Too many failures"));
    assert!(attempt(b.addr, Ipv4Addr::new(127, 0, 0, 22), PASSWORD).await.starts_with("+OK"));
    // The ban is a row every daemon on the database reads.
    let bans = db.store.active_bans().await.unwrap();
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].0, "127.0.0.21");
    // Lifted (mmadmin ban del): served again everywhere once the daemons have read it.
    assert!(db.store.delete_ban("127.0.0.21").await.unwrap());
    for addr in [a.addr, b.addr] {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let line = attempt(addr, attacker, PASSWORD).await;
            if line.starts_with("+OK") {
                break;
            }
            assert!(Instant::now() < deadline, "still refused after the ban was lifted: {line}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// `tries` wrong passwords from `from` under the `[bans]` of `ban_setup`: each refused as
/// an invalid login, never banned; the right one then logs in, and no ban is stored.
async fn never_banned(ban_setup: impl FnOnce(&mut pop3d::config::Config), from: Ipv4Addr, tries: usize) {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let mut cfg = config(&db.url);
    ban_setup(&mut cfg);
    let s = Server::start(cfg).await;
    for i in 0..tries {
        assert_eq!(attempt(s.addr, from, &format!("wrong {i}")).await, "-ERR [AUTH] Invalid login");
    }
    assert!(attempt(s.addr, from, PASSWORD).await.starts_with("+OK"));
    assert!(db.store.active_bans().await.unwrap().is_empty());
}

#[tokio::test]
async fn allowed_networks_are_never_banned() {
    never_banned(|cfg| banning(cfg, &["127.0.0.30/31"]), Ipv4Addr::new(127, 0, 0, 30), 6).await;
}

/// Guessing from four addresses with one verification slot while a user logs in from a
/// fifth: the user is served, and the guessers are banned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_logs_in_while_others_guess() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let mut cfg = config(&db.url);
    banning(&mut cfg, &[]);
    cfg.bans.login_failures = 6;
    cfg.own.hash_concurrency = 1;
    let s = Server::start(cfg).await;
    let mut guessers = Vec::new();
    for n in 0..4u8 {
        let addr = s.addr;
        guessers.push(tokio::spawn(async move {
            let from = Ipv4Addr::new(127, 0, 1, n + 1);
            let mut replies = Vec::new();
            for i in 0..8 {
                replies.push(attempt(addr, from, &format!("guess {i}")).await);
            }
            replies
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let user = attempt(s.addr, Ipv4Addr::new(127, 0, 2, 1), PASSWORD).await;
    assert!(user.starts_with("+OK"), "the user is served: {user}");
    for g in guessers {
        let replies = g.await.unwrap();
        assert!(replies.iter().any(|r| r.contains("Too many failures")), "each guesser is banned: {replies:?}");
        assert!(!replies.iter().any(|r| r.starts_with("+OK")), "{replies:?}");
    }
}

#[tokio::test]
async fn bans_can_be_turned_off() {
    let off = |cfg: &mut pop3d::config::Config| {
        banning(cfg, &[]);
        cfg.bans.enabled = false;
    };
    never_banned(off, Ipv4Addr::new(127, 0, 0, 35), 5).await;
}
