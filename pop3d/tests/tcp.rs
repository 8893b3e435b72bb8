//! Loopback tests against an in-process mmpop3d: wire format, streaming, pipelining,
//! STLS, POP3S, hostile input, counters on every backend, timeouts and shutdown.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use common::store::Usage;
use common::testing::{Backend, TestCert, TestDb};
use support::{Client, PASSWORD, Pop3, Server, config, put, seed};
use tokio::io::AsyncReadExt;

async fn sqlite_server(tweak: impl FnOnce(&mut pop3d::config::Config)) -> (TestDb, Server) {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let mut cfg = config(&db.url);
    tweak(&mut cfg);
    let server = Server::start(cfg).await;
    (db, server)
}

#[tokio::test]
async fn retr_is_byte_exact_and_stuffed_on_the_wire() {
    let (db, server) = sqlite_server(|_| {}).await;
    let body = b"Subject: dots\r\n\r\n.one\r\n..two\r\n.\r\nend\r\n";
    put(&db, &["mmondor@example.org"], body).await;
    let mut c = Client::connect(server.addr).await;
    c.line().await;
    assert!(c.login("mmondor@example.org", PASSWORD).await.starts_with("+OK 1 messages"));
    let size: usize = c.cmd("LIST 1").await.rsplit(' ').next().unwrap().parse().unwrap();
    c.send(b"RETR 1\r\n").await;
    assert_eq!(c.line().await.unwrap(), format!("+OK {size} octets"));
    // Read the raw wire form up to the terminator.
    let mut wire = Vec::new();
    while !wire.ends_with(b"\r\n.\r\n") {
        let mut b = [0u8; 256];
        let n = c.io.read(&mut b).await.unwrap();
        assert!(n > 0);
        wire.extend_from_slice(&b[..n]);
    }
    let trace = b"Return-Path: <s@origin.test>\r\nX-For: mmondor@example.org\r\n";
    let expected_wire = [&trace[..], b"Subject: dots\r\n\r\n..one\r\n...two\r\n..\r\nend\r\n.\r\n"].concat();
    assert_eq!(String::from_utf8_lossy(&wire), String::from_utf8_lossy(&expected_wire));
    assert_eq!(size, trace.len() + body.len(), "LIST counts the octets before stuffing");
}

#[tokio::test]
async fn large_message_streams_intact() {
    let (db, server) = sqlite_server(|_| {}).await;
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..80_000 {
        body.extend_from_slice(
            format!("{}line {i:06} of a large message\r\n", if i % 7 == 0 { "." } else { "" }).as_bytes(),
        );
    }
    assert!(body.len() > 2_000_000);
    put(&db, &["mmondor@example.org"], &body).await;
    let mut c = Client::connect(server.addr).await;
    c.line().await;
    c.login("mmondor@example.org", PASSWORD).await;
    let (status, got) = c.multi("RETR 1").await;
    assert!(got.ends_with(&body));
    assert_eq!(status, format!("+OK {} octets", got.len()));
    let (_, top) = c.multi("TOP 1 2").await;
    assert!(
        top.ends_with(b"Subject: big\r\n\r\n.line 000000 of a large message\r\nline 000001 of a large message\r\n")
    );
}

#[tokio::test]
async fn pipelined_commands() {
    let (db, server) = sqlite_server(|_| {}).await;
    put(&db, &["mmondor@example.org"], b"Subject: a\r\n\r\nx\r\n").await;
    let mut c = Client::connect(server.addr).await;
    c.line().await;
    c.send(format!("USER mmondor@example.org\r\nPASS {PASSWORD}\r\nSTAT\r\nUIDL\r\nDELE 1\r\nQUIT\r\n").as_bytes())
        .await;
    assert_eq!(c.line().await.unwrap(), "+OK Send PASS");
    assert!(c.line().await.unwrap().starts_with("+OK 1 messages"));
    assert!(c.line().await.unwrap().starts_with("+OK 1 "));
    assert_eq!(c.line().await.unwrap(), "+OK");
    let uid = String::from_utf8(c.body().await).unwrap();
    assert!(uid.starts_with("1 "));
    assert_eq!(c.line().await.unwrap(), "+OK Message 1 deleted");
    assert_eq!(c.line().await.unwrap(), "+OK pop.example.org POP3 server signing off (1 messages deleted)");
    assert!(c.closed().await);
    assert_eq!(db.counters("mmondor@example.org").await, Usage::default());
}

#[tokio::test]
async fn stls_discards_plaintext_injection_and_pop3s_works() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate(dir.path());
    let (db, server) = sqlite_server(|c| c.tls = Some(support::tls_config(&cert))).await;
    put(&db, &["mmondor@example.org"], b"Subject: tls\r\n\r\nsecret\r\n").await;
    let mut c = Client::connect(server.addr).await;
    c.line().await;
    c.send(b"STLS\r\nUSER mmondor@example.org\r\n").await;
    assert_eq!(c.line().await.unwrap(), "+OK Begin TLS negotiation");
    let tls = cert.connector().connect("localhost".try_into().unwrap(), c.io.into_inner()).await.unwrap();
    let mut t = Client::new(tls);
    // Had the injected USER been kept, PASS would log in.
    assert_eq!(t.cmd(&format!("PASS {PASSWORD}")).await, "-ERR Send USER first");
    assert!(t.login("mmondor@example.org", PASSWORD).await.starts_with("+OK 1 messages"));
    assert_eq!(t.cmd("QUIT").await, "+OK pop.example.org POP3 server signing off (0 messages deleted)");
    // RFC 8446 §6.1: the TLS session ends with close_notify, not a bare FIN.
    assert!(t.closed_cleanly().await, "no TLS close_notify after QUIT");

    let tcp = tokio::net::TcpStream::connect(server.tls_addr.unwrap()).await.unwrap();
    let tls = cert.connector().connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    let mut s = Client::new(tls);
    assert_eq!(s.line().await.unwrap(), "+OK pop.example.org POP3 server ready");
    assert!(!String::from_utf8(s.multi("CAPA").await.1).unwrap().contains("STLS"));
    assert!(s.login("mmondor@example.org", PASSWORD).await.starts_with("+OK 1 messages"));
    let (_, m) = s.multi("RETR 1").await;
    assert!(m.ends_with(b"secret\r\n"));
    assert!(s.cmd("QUIT").await.starts_with("+OK "));
    assert!(s.closed_cleanly().await, "no TLS close_notify after QUIT on POP3S");
}

#[tokio::test]
async fn hostile_input_gets_clear_errors() {
    let (_db, server) = sqlite_server(|_| {}).await;
    let mut c = Client::connect(server.addr).await;
    c.line().await;
    c.send(&[b'A'; 3000]).await;
    c.send(b"\r\n").await;
    assert_eq!(c.line().await.unwrap(), "-ERR Line too long");
    c.send(b"\0\xff\xfe\x01\r\n").await;
    assert_eq!(c.line().await.unwrap(), "-ERR Unknown command");
    assert_eq!(c.cmd(&format!("USER {}", "x".repeat(240))).await, "+OK Send PASS");
    assert_eq!(c.cmd("AUTH PLAIN %%%").await, "-ERR [AUTH] Invalid base64 in AUTH response");
    assert_eq!(c.cmd("AUTH PLAIN").await, "+ ");
    c.send(&[b'Q'; 5000]).await;
    c.send(b"\r\n").await;
    assert_eq!(c.line().await.unwrap(), "-ERR Line too long");
    assert_eq!(c.cmd("RETR 1").await, "-ERR Command not valid in this state");
    assert_eq!(c.cmd("CAPA").await, "+OK Capability list follows");
    c.body().await;
    assert_eq!(c.cmd("QUIT").await, "+OK pop.example.org POP3 server signing off");
}

/// On every backend: a delivery during an open session does not disturb it; a dropped
/// connection after DELE keeps the mail; QUIT after DELE removes it and the counters
/// match a recount.
#[tokio::test]
async fn deletion_round_trip_on_every_backend() {
    for db in TestDb::all().await {
        seed(&db).await;
        put(&db, &["mmondor@example.org"], b"Subject: 1\r\n\r\none\r\n").await;
        put(&db, &["mmondor@example.org", "sales@example.org"], b"Subject: 2\r\n\r\ntwo\r\n").await;
        let server = Server::start(config(&db.url)).await;
        let b = db.backend;

        let mut c = Client::connect(server.addr).await;
        c.line().await;
        assert!(c.login("mmondor@example.org", PASSWORD).await.starts_with("+OK 2 messages"), "{b:?}");
        assert_eq!(c.cmd("DELE 1").await, "+OK Message 1 deleted");
        drop(c); // connection lost: nothing deleted
        let mut c = None;
        for _ in 0..100 {
            let mut n = Client::connect(server.addr).await;
            n.line().await;
            if n.login("mmondor@example.org", PASSWORD).await.starts_with("+OK 2 messages") {
                c = Some(n);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let mut c = c.unwrap_or_else(|| panic!("box not freed on {b:?}"));
        put(&db, &["mmondor@example.org"], b"Subject: 3\r\n\r\nlate\r\n").await;
        assert!(c.cmd("STAT").await.starts_with("+OK 2 "), "{b:?}");
        assert_eq!(c.cmd("DELE 1").await, "+OK Message 1 deleted");
        assert_eq!(c.cmd("DELE 2").await, "+OK Message 2 deleted");
        assert_eq!(c.cmd("QUIT").await, "+OK pop.example.org POP3 server signing off (2 messages deleted)");
        let counters = db.counters("mmondor@example.org").await;
        assert_eq!(counters, db.store.recount("mmondor@example.org").await.unwrap(), "{b:?}");
        assert_eq!(counters.messages, 1, "{b:?}");
        assert_eq!(db.store.maildrop("sales@example.org").await.unwrap().len(), 1, "{b:?}");
        server.stop().await;
    }
}

#[tokio::test]
async fn input_timeout_ends_without_update() {
    let (db, server) = sqlite_server(|c| c.limits.input_timeout = Some(1)).await;
    put(&db, &["mmondor@example.org"], b"Subject: 1\r\n\r\none\r\n").await;
    let mut c = Client::connect(server.addr).await;
    c.line().await;
    c.login("mmondor@example.org", PASSWORD).await;
    assert_eq!(c.cmd("DELE 1").await, "+OK Message 1 deleted");
    assert_eq!(c.line().await.unwrap(), "-ERR Timeout, closing connection");
    assert!(c.closed().await);
    assert_eq!(db.counters("mmondor@example.org").await.messages, 1);
}

#[tokio::test]
async fn shutdown_ends_sessions_without_update() {
    let (db, server) = sqlite_server(|_| {}).await;
    put(&db, &["mmondor@example.org"], b"Subject: 1\r\n\r\none\r\n").await;
    let mut c = Client::connect(server.addr).await;
    c.line().await;
    c.login("mmondor@example.org", PASSWORD).await;
    c.cmd("DELE 1").await;
    assert!(server.stop().await);
    assert_eq!(c.line().await.unwrap(), "-ERR [SYS/TEMP] pop.example.org shutting down");
    assert!(c.closed().await);
    assert_eq!(db.counters("mmondor@example.org").await.messages, 1);
}

#[tokio::test]
async fn too_many_clients() {
    let (_db, server) = sqlite_server(|c| {
        c.limits.max_clients = 1;
        c.limits.stress_threshold = 0;
    })
    .await;
    let mut first = Client::connect(server.addr).await;
    first.line().await;
    let mut second = Client::connect(server.addr).await;
    assert_eq!(second.line().await.unwrap(), "-ERR [SYS/TEMP] Too many clients, try again later");
    assert!(second.closed().await);
}

#[tokio::test]
async fn per_address_limit_refusal() {
    let (_db, server) = sqlite_server(|c| c.limits.max_per_address = 1).await;
    let mut first = Client::connect(server.addr).await;
    assert!(first.line().await.unwrap().starts_with("+OK"));
    let mut second = Client::connect(server.addr).await;
    assert_eq!(second.line().await.unwrap(), "-ERR [SYS/TEMP] Too many connections from your address");
    assert!(second.closed().await);
}

#[tokio::test]
async fn shutdown_during_retr_finishes_the_message() {
    let (db, server) = sqlite_server(|_| {}).await;
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    body.extend(std::iter::repeat_n(b"0123456789abcdef0123456789abcdef\r\n".as_slice(), 100_000).flatten());
    put(&db, &["mmondor@example.org"], &body).await;
    let mut c = Client::connect(server.addr).await;
    c.line().await;
    c.login("mmondor@example.org", PASSWORD).await;
    assert_eq!(c.cmd("DELE 1").await, "+OK Message 1 deleted");
    assert_eq!(c.cmd("RSET").await.split(' ').next(), Some("+OK"));
    c.send(b"RETR 1\r\n").await;
    let status = c.line().await.unwrap();
    assert!(status.starts_with("+OK"), "{status}");
    let server = std::sync::Arc::new(server);
    let stopping = {
        let s = server.clone();
        tokio::spawn(async move { s.stop().await })
    };
    let got = c.body().await;
    assert!(got.ends_with(&body), "the message in transfer arrives whole");
    assert_eq!(c.line().await.unwrap(), "-ERR [SYS/TEMP] pop.example.org shutting down");
    assert!(stopping.await.unwrap());
    assert_eq!(db.counters("mmondor@example.org").await.messages, 1, "nothing deleted without QUIT");
}

#[tokio::test]
async fn errors_are_tarpitted() {
    let (_db, server) = sqlite_server(|c| c.limits.error_delay = 1).await;
    let mut c = Client::connect(server.addr).await;
    c.line().await;
    let start = std::time::Instant::now();
    assert_eq!(c.cmd("BOGUS").await, "-ERR Unknown command");
    assert_eq!(c.cmd("BOGUS").await, "-ERR Unknown command");
    assert!(start.elapsed() >= std::time::Duration::from_secs(3), "1 s then 2 s of delay");
    let start = std::time::Instant::now();
    assert_eq!(c.cmd("NOOP").await, "+OK");
    assert!(start.elapsed() < std::time::Duration::from_secs(1), "successes are not delayed");
}

/// An IPv4 loopback client of a dual-stack `[::]` listener is a loopback client: it may
/// log in without TLS (`allow_plaintext_auth = false` still permits loopback).
#[tokio::test]
async fn ipv4_mapped_loopback_is_loopback() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let mut cfg = config(&db.url);
    cfg.own.allow_plaintext_auth = false;
    let server = Server::start_at(cfg, "[::]:0").await;
    let mut c = Client::connect(std::net::SocketAddr::from(([127, 0, 0, 1], server.addr.port()))).await;
    c.line().await;
    assert!(c.login("mmondor@example.org", PASSWORD).await.starts_with("+OK "));
}

/// Behind a trusted proxy (PROXY protocol v2) the client it names is the client: a
/// remote one may not log in without TLS although the proxy itself is on loopback, and a
/// loopback one may.
#[tokio::test]
async fn proxied_clients_are_judged_by_their_own_address() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let mut cfg = config(&db.url);
    cfg.own.allow_plaintext_auth = false;
    cfg.listen.proxy_networks = vec!["127.0.0.1/32".parse().unwrap()];
    let server = Server::start(cfg).await;
    let header = |client: [u8; 4]| {
        let mut h = common::net::proxy::V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0, 12]);
        h.extend_from_slice(&client);
        h.extend_from_slice(&[127, 0, 0, 1, 0x9c, 0x40, 0, 110]);
        h
    };
    let mut remote = Client::connect(server.addr).await;
    remote.send(&header([192, 0, 2, 9])).await;
    remote.line().await;
    assert_eq!(remote.cmd("USER mmondor@example.org").await, "-ERR [AUTH] TLS required; use STLS or POP3S");
    let mut local = Client::connect(server.addr).await;
    local.send(&header([127, 0, 0, 2])).await;
    local.line().await;
    assert!(local.login("mmondor@example.org", PASSWORD).await.starts_with("+OK "));
    // Without a header the proxy's connection is closed before the greeting.
    let mut bare = Client::connect(server.addr).await;
    bare.send(b"USER mmondor@example.org\r\n").await;
    assert_eq!(bare.line().await, None);
}

/// HAProxy from Debian with `send-proxy-v2` in front of mmpop3d: the per-address limit
/// counts the clients HAProxy names (127.0.0.5, 127.0.0.6), not HAProxy at 127.0.0.1.
#[tokio::test(flavor = "multi_thread")]
async fn haproxy_send_proxy_v2_in_front_of_mmpop3d() {
    if !common::testing::have("haproxy") {
        return;
    }
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let mut cfg = config(&db.url);
    cfg.listen.proxy_networks = vec!["127.0.0.1/32".parse().unwrap()];
    cfg.limits.max_per_address = 1;
    let server = Server::start(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::testing::free_port();
    let hp = {
        let (d, routes) = (dir.path().to_path_buf(), [(port, server.addr)]);
        tokio::task::spawn_blocking(move || common::testing::Haproxy::start(&d, &routes)).await.unwrap()
    };
    let front = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut a = Client::connect_from(front, [127, 0, 0, 5].into()).await;
    assert!(a.line().await.unwrap().starts_with("+OK "));
    assert!(a.login("mmondor@example.org", PASSWORD).await.starts_with("+OK "));
    let mut b = Client::connect_from(front, [127, 0, 0, 6].into()).await;
    assert!(b.line().await.unwrap().starts_with("+OK "), "127.0.0.6 is another client");
    let mut again = Client::connect_from(front, [127, 0, 0, 5].into()).await;
    assert_eq!(again.line().await.unwrap(), "-ERR [SYS/TEMP] Too many connections from your address");
    assert!(a.cmd("QUIT").await.starts_with("+OK "));
    drop(hp);
}

/// Stress mode: with every place taken, the connection that has waited longest without
/// logging in is closed for a new client; a logged-in session never is; with nothing to
/// close, the new client is refused.
#[tokio::test]
async fn stress_mode_closes_the_longest_idle_before_login_for_a_new_client() {
    let (_db, server) = sqlite_server(|c| {
        c.limits.max_clients = 2;
        c.limits.stress_threshold = 50;
    })
    .await;
    let mut user = Client::connect(server.addr).await;
    user.line().await;
    assert!(user.login("mmondor@example.org", PASSWORD).await.starts_with("+OK"));
    let mut idle = Client::connect(server.addr).await;
    assert!(idle.line().await.unwrap().starts_with("+OK"));
    let mut new = Client::connect(server.addr).await;
    assert!(new.line().await.unwrap().starts_with("+OK"), "the new client is served");
    assert!(idle.line().await.unwrap().starts_with("-ERR"), "the idle one gets the timeout reply");
    assert!(idle.closed().await);
    assert!(user.cmd("STAT").await.starts_with("+OK"), "a logged-in session is kept");
    assert!(new.login("mmondor@example.org", PASSWORD).await.starts_with("-ERR [IN-USE]"));
    // Now both places hold sessions that are not idle-before-login... `new` is idle again
    // after its refused login; logged-in `user` is not. One more client takes `new`'s place.
    let mut third = Client::connect(server.addr).await;
    assert!(third.line().await.unwrap().starts_with("+OK"));
    assert!(new.line().await.unwrap().starts_with("-ERR"));
    assert!(new.closed().await);
    assert!(user.cmd("QUIT").await.starts_with("+OK"));
}

/// Before login a client gets `[pop3d] login_timeout`, not the ten minutes RFC 1939 asks
/// for an authenticated session; a stalled TLS handshake gets `[limits]
/// handshake_timeout`.
#[tokio::test]
async fn login_and_handshake_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate(dir.path());
    let (_db, server) = sqlite_server(|c| {
        c.own.login_timeout = 1;
        c.limits.handshake_timeout = 1;
        c.tls = Some(support::tls_config(&cert));
    })
    .await;
    let mut c = Client::connect(server.addr).await;
    c.line().await;
    assert!(c.line().await.unwrap().starts_with("-ERR"), "timeout reply before login");
    assert!(c.closed().await);
    let mut logged = Client::connect(server.addr).await;
    logged.line().await;
    assert!(logged.login("mmondor@example.org", PASSWORD).await.starts_with("+OK"));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(logged.cmd("NOOP").await.starts_with("+OK"), "after login the input timeout applies");
    // POP3S: connect and never start the handshake.
    let mut stalled = Client::new(tokio::net::TcpStream::connect(server.tls_addr.unwrap()).await.unwrap());
    assert!(stalled.closed().await, "a stalled handshake is closed");
}
