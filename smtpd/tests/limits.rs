//! DoS limits on a loopback server: per-address and rate refusals, bounded per-address
//! state, the tarpit, and the message flood limit (spec/mail.md §3.2, §3.9, §8).

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::testing::{Backend, TestDb};
use support::{Client, Server, Smtp, config, deliver, seed};

async fn server(tweak: impl FnOnce(&mut smtpd::config::Config)) -> (TestDb, Server) {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let mut cfg = config(&db.url);
    tweak(&mut cfg);
    let s = Server::start(cfg).await;
    (db, s)
}

#[tokio::test]
async fn too_many_connections_from_one_address() {
    let (_db, s) = server(|c| c.limits.max_per_address = 2).await;
    let mut a = Client::connect(s.addr).await;
    let mut b = Client::connect(s.addr).await;
    assert_eq!(a.code().await, 220);
    assert_eq!(b.code().await, 220);
    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.reply().await.unwrap(), (421, "4.7.0 mx.example.org Too many connections from your address".into()));
    assert!(c.closed().await);
    // Another address is still served.
    let mut other = Client::connect_from(s.addr, Ipv4Addr::new(127, 0, 0, 2)).await;
    assert_eq!(other.code().await, 220);
    assert_eq!(a.cmd("QUIT").await, 221);
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut d = Client::connect(s.addr).await;
    assert_eq!(d.code().await, 220, "a place frees when a connection ends");
}

#[tokio::test]
async fn connection_rate_per_address() {
    let (_db, s) = server(|c| {
        c.limits.connection_rate = 3;
        c.limits.connection_period = 60;
    })
    .await;
    for _ in 0..3 {
        let mut c = Client::connect(s.addr).await;
        assert_eq!(c.code().await, 220);
    }
    let mut c = Client::connect(s.addr).await;
    assert_eq!(
        c.reply().await.unwrap(),
        (421, "4.7.0 mx.example.org Connection rate exceeded, try again later".into())
    );
    assert!(c.closed().await);
    let mut other = Client::connect_from(s.addr, Ipv4Addr::new(127, 0, 0, 3)).await;
    assert_eq!(other.code().await, 220);
}

/// Hundreds of distinct source addresses: the gate's state follows the live ones and
/// the janitor's sweep empties the rate table once their window has passed.
#[tokio::test]
async fn per_address_state_stays_bounded() {
    let (_db, s) = server(|c| {
        c.limits.connection_rate = 2;
        c.limits.connection_period = 1;
        c.limits.max_per_address = 1;
        c.limits.max_clients = 1000;
    })
    .await;
    let mut open = Vec::new();
    for i in 0..300u32 {
        let src = Ipv4Addr::from(0x7f01_0000 + i); // 127.1.x.y
        let mut c = Client::connect_from(s.addr, src).await;
        assert_eq!(c.code().await, 220, "{src}");
        open.push(c);
    }
    let (rate, live) = s.server.gate().tracked();
    assert_eq!((rate, live), (300, 300));
    drop(open);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    s.server.gate().sweep();
    assert_eq!(s.server.gate().tracked(), (0, 0), "nothing kept for addresses that left");
}

#[tokio::test]
async fn errors_are_tarpitted() {
    let (_db, s) = server(|c| c.limits.error_delay = 1).await;
    let mut c = Client::connect(s.addr).await;
    c.code().await;
    let start = Instant::now();
    assert_eq!(c.cmd("BOGUS").await, 500);
    assert_eq!(c.cmd("BOGUS").await, 500);
    assert!(start.elapsed() >= Duration::from_secs(3), "1 s then 2 s of delay");
    let start = Instant::now();
    assert_eq!(c.cmd("NOOP").await, 250);
    assert!(start.elapsed() < Duration::from_secs(1), "successes are not delayed");
}

#[tokio::test]
async fn message_flood_limit() {
    let (db, s) = server(|c| c.own.flood_messages = 2).await;
    for i in 0..2 {
        assert_eq!(deliver(s.addr, "a@b.org", &["mmondor@example.org"], &format!("n {i}\r\n")).await, 250);
    }
    let mut c = Client::connect(s.addr).await;
    c.code().await;
    c.cmd("EHLO c").await;
    assert_eq!(
        c.cmd_reply("MAIL FROM:<a@b.org>").await,
        (450, "4.7.1 Too many messages from your address, try again later".into())
    );
    let mut other = Client::connect_from(s.addr, Ipv4Addr::new(127, 0, 0, 9)).await;
    other.code().await;
    other.cmd("EHLO c").await;
    assert_eq!(other.cmd("MAIL FROM:<a@b.org>").await, 250, "other addresses are not affected");
    assert_eq!(db.counters("mmondor@example.org").await.messages, 2);
}

#[tokio::test]
async fn flood_exempt_networks_are_not_limited() {
    let (db, s) = server(|c| {
        c.own.flood_messages = 1;
        c.own.flood_exempt = vec!["127.0.0.0/30".parse().unwrap()];
    })
    .await;
    for i in 0..3 {
        assert_eq!(deliver(s.addr, "a@b.org", &["mmondor@example.org"], &format!("n {i}\r\n")).await, 250);
    }
    let mut outside = Client::connect_from(s.addr, Ipv4Addr::new(127, 0, 0, 9)).await;
    outside.code().await;
    outside.cmd("EHLO c").await;
    assert_eq!(outside.cmd("MAIL FROM:<a@b.org>").await, 250);
    assert_eq!(outside.cmd("RCPT TO:<mmondor@example.org>").await, 250);
    assert_eq!(outside.cmd("DATA").await, 354);
    assert_eq!(outside.cmd("x\r\n.").await, 250);
    assert_eq!(outside.cmd("MAIL FROM:<a@b.org>").await, 450, "outside the exempt network the limit holds");
    assert_eq!(db.counters("mmondor@example.org").await.messages, 4);
}

/// Probing unknown recipients bans the address (`[bans] unknown_recipients`): the probe
/// that reaches the limit ends the session, and the next connection is refused.
#[tokio::test]
async fn probing_unknown_recipients_bans_the_address() {
    let (db, s) = server(|c| {
        c.bans.unknown_recipients = 3;
        c.bans.allow = Vec::new();
    })
    .await;
    // A domain served without a wildcard alias, so unknown names are unknown.
    db.add_box("known@example.com", 1, 0, 0).await;
    let prober = Ipv4Addr::new(127, 0, 0, 40);
    let mut c = Client::connect_from(s.addr, prober).await;
    c.code().await;
    c.cmd("EHLO c").await;
    assert_eq!(c.cmd("MAIL FROM:<a@b.org>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<nobody1@example.com>").await, 550);
    assert_eq!(c.cmd("RCPT TO:<nobody2@example.com>").await, 550);
    assert_eq!(
        c.cmd_reply("RCPT TO:<nobody3@example.com>").await,
        (421, "4.7.0 mx.example.org Too many failures from your address, try again later".into())
    );
    assert!(c.closed().await);
    let mut again = Client::connect_from(s.addr, prober).await;
    assert_eq!(
        again.reply().await.unwrap(),
        (421, "4.7.0 mx.example.org Too many failures from your address, try again later".into())
    );
    let mut other = Client::connect_from(s.addr, Ipv4Addr::new(127, 0, 0, 41)).await;
    assert_eq!(other.code().await, 220, "other addresses are served");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(db.store.active_bans().await.unwrap().len(), 1, "stored for the other daemons");
}
