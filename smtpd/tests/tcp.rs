//! Loopback tests against an in-process server (style.md P11 (c)): pipelining, STARTTLS,
//! implicit TLS, concurrency on every backend, hostile input, limits and shutdown.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use common::testing::{Backend, TestCert, TestDb};
use support::{Client, Server, Smtp, config, consistent, deliver, messages, seed};

async fn sqlite_server(tweak: impl FnOnce(&mut smtpd::config::Config)) -> (TestDb, Server) {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let mut cfg = config(&db.url);
    tweak(&mut cfg);
    let server = Server::start(cfg).await;
    (db, server)
}

#[tokio::test]
async fn pipelined_transactions() {
    let (db, server) = sqlite_server(|_| {}).await;
    let mut c = Client::connect(server.addr).await;
    assert_eq!(c.code().await, 220);
    c.send(b"EHLO pipe.test\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<mmondor@example.org>\r\nRCPT TO:<sales@example.org>\r\nDATA\r\n").await;
    for want in [250, 250, 250, 250, 354] {
        assert_eq!(c.code().await, want);
    }
    c.send(b"Subject: one\r\n\r\nfirst\r\n.\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<nobody@elsewhere.test>\r\nRCPT TO:<sales-x@example.org>\r\nDATA\r\n").await;
    for want in [250, 250, 550, 250, 354] {
        assert_eq!(c.code().await, want);
    }
    c.send(b"Subject: two\r\n\r\nsecond\r\n.\r\nQUIT\r\n").await;
    assert_eq!(c.code().await, 250);
    assert_eq!(c.code().await, 221);
    assert!(c.closed().await);
    assert_eq!(messages(&db, "mmondor@example.org").await.len(), 1);
    assert_eq!(messages(&db, "sales@example.org").await.len(), 2);
    consistent(&db, "sales@example.org").await;
}

#[tokio::test]
async fn starttls_discards_pipelined_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate(dir.path());
    let (db, server) = sqlite_server(|c| c.tls = Some(support::tls_config(&cert))).await;
    let mut c = Client::connect(server.addr).await;
    assert_eq!(c.code().await, 220);
    let (code, ehlo) = c.cmd_reply("EHLO c").await;
    assert_eq!(code, 250);
    assert!(ehlo.lines().any(|l| l == "STARTTLS"), "{ehlo}");
    // The classic injection: commands sent in clear right after STARTTLS.
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@b.org>\r\nRCPT TO:<mmondor@example.org>\r\n").await;
    assert_eq!(c.code().await, 220);
    let tcp = c.io.into_inner();
    let tls = cert.connector().connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    let mut t = Client::new(tls);
    // Had the injected MAIL been kept, this RCPT would be accepted.
    assert_eq!(t.cmd("RCPT TO:<mmondor@example.org>").await, 503);
    let (code, ehlo) = t.cmd_reply("EHLO c").await;
    assert_eq!(code, 250);
    assert!(!ehlo.contains("STARTTLS"));
    assert_eq!(t.cmd("MAIL FROM:<good@b.org>").await, 250);
    assert_eq!(t.cmd("RCPT TO:<mmondor@example.org>").await, 250);
    assert_eq!(t.cmd("DATA").await, 354);
    t.send(b"Subject: secret\r\n\r\nover TLS\r\n.\r\n").await;
    assert_eq!(t.code().await, 250);
    assert_eq!(t.cmd("QUIT").await, 221);
    assert!(t.closed_cleanly().await, "no TLS close_notify after QUIT");
    let m = messages(&db, "mmondor@example.org").await;
    assert_eq!(m.len(), 1);
    let text = String::from_utf8_lossy(&m[0]);
    assert!(text.contains("with ESMTPS"), "{text}");
    assert!(text.contains("Return-Path: <good@b.org>"));
}

#[tokio::test]
async fn implicit_tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate(dir.path());
    let (db, server) = sqlite_server(|c| c.tls = Some(support::tls_config(&cert))).await;
    let tcp = tokio::net::TcpStream::connect(server.tls_addr.unwrap()).await.unwrap();
    let tls = cert.connector().connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    let mut t = Client::new(tls);
    assert_eq!(t.code().await, 220);
    let (_, ehlo) = t.cmd_reply("EHLO c").await;
    assert!(!ehlo.contains("STARTTLS"));
    assert_eq!(t.cmd("STARTTLS").await, 503);
    assert_eq!(t.cmd("MAIL FROM:<a@b.org>").await, 250);
    assert_eq!(t.cmd("RCPT TO:<x@example.org>").await, 250);
    assert_eq!(t.cmd("DATA").await, 354);
    t.send(b"hi\r\n.\r\n").await;
    assert_eq!(t.code().await, 250);
    assert_eq!(messages(&db, "mmondor@example.org").await.len(), 1);
    // RFC 8446 §6.1: QUIT ends the TLS session with close_notify, not a bare FIN.
    assert_eq!(t.cmd("QUIT").await, 221);
    assert!(t.closed_cleanly().await, "no TLS close_notify after QUIT");
}

/// 50 concurrent deliveries into a box with room for 10 leave exactly 10 messages and
/// counters equal to a recount, on every backend.
#[tokio::test]
async fn concurrent_deliveries_respect_the_box_limit() {
    for db in TestDb::all().await {
        let u = db.add_user("u", "").await;
        db.add_box("ten@example.org", u, 0, 10).await;
        let server = Server::start(config(&db.url)).await;
        let mut tasks = Vec::new();
        for i in 0..50 {
            let addr = server.addr;
            tasks.push(tokio::spawn(async move {
                deliver(addr, "a@b.org", &["ten@example.org"], &format!("Subject: {i}\r\n\r\nbody {i}\r\n")).await
            }));
        }
        let mut stored = 0;
        for t in tasks {
            let code = t.await.unwrap();
            assert!(matches!(code, 250 | 452 | 0), "{code} on {:?}", db.backend);
            if code == 250 {
                stored += 1;
            }
        }
        assert_eq!(stored, 10, "{:?}", db.backend);
        assert_eq!(consistent(&db, "ten@example.org").await.messages, 10, "{:?}", db.backend);
        server.stop().await;
    }
}

#[tokio::test]
async fn hostile_input_gets_clear_replies() {
    let (db, server) = sqlite_server(|_| {}).await;
    let mut c = Client::connect(server.addr).await;
    assert_eq!(c.code().await, 220);
    let mut long = vec![b'A'; 5000];
    long.extend_from_slice(b"\r\n");
    c.send(&long).await;
    assert_eq!(c.reply().await.unwrap(), (500, "5.5.2 Line too long".into()));
    c.send(b"\0\xff\xfe\x01garbage\r\n").await;
    assert_eq!(c.code().await, 500);
    c.send(b"MAIL FROM:<\0@b.org>\r\n").await;
    assert_eq!(c.code().await, 501);
    c.send(b"HELO \xff\xfe\r\n").await;
    assert_eq!(c.code().await, 501);
    assert_eq!(c.cmd("DATA").await, 503);
    assert_eq!(c.cmd("EHLO still.alive").await, 250);
    assert_eq!(c.cmd("QUIT").await, 221);
    assert_eq!(consistent(&db, "mmondor@example.org").await, common::store::Usage::default());
}

#[tokio::test]
async fn smuggling_variants_are_refused_whole() {
    let (db, server) = sqlite_server(|_| {}).await;
    let hidden = "MAIL FROM:<evil@b.org>\r\nRCPT TO:<sales@example.org>\r\nDATA\r\nsmuggled\r\n";
    for marker in ["\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r"] {
        let mut c = Client::connect(server.addr).await;
        assert_eq!(c.code().await, 220);
        assert_eq!(c.cmd("EHLO c").await, 250);
        assert_eq!(c.cmd("MAIL FROM:<a@b.org>").await, 250);
        assert_eq!(c.cmd("RCPT TO:<mmondor@example.org>").await, 250);
        assert_eq!(c.cmd("DATA").await, 354);
        c.send(format!("Subject: s\r\n\r\nbody{marker}{hidden}.\r\n").as_bytes()).await;
        assert_eq!(c.reply().await.unwrap(), (554, "5.5.2 Bare CR or LF not allowed".into()), "{marker:?}");
        // No reply to any hidden command is pending: the next reply answers NOOP.
        assert_eq!(c.cmd_reply("NOOP").await, (250, "2.0.0 Ok".into()), "{marker:?}");
    }
    assert_eq!(consistent(&db, "mmondor@example.org").await, common::store::Usage::default());
    assert_eq!(consistent(&db, "sales@example.org").await, common::store::Usage::default());
}

#[tokio::test]
async fn client_vanishing_mid_data_stores_nothing() {
    let (db, server) = sqlite_server(|_| {}).await;
    let mut c = Client::connect(server.addr).await;
    c.code().await;
    c.cmd("EHLO c").await;
    c.cmd("MAIL FROM:<a@b.org>").await;
    c.cmd("RCPT TO:<mmondor@example.org>").await;
    assert_eq!(c.cmd("DATA").await, 354);
    c.send(b"Subject: cut\r\n\r\nhalf a message\r\n").await;
    drop(c);
    // The server goes on serving; the half message is not stored.
    assert_eq!(deliver(server.addr, "a@b.org", &["sales@example.org"], "ok\r\n").await, 250);
    assert_eq!(consistent(&db, "mmondor@example.org").await, common::store::Usage::default());
}

#[tokio::test]
async fn message_at_the_size_limit_and_over() {
    let (db, server) = sqlite_server(|c| c.own.max_message_size = 1000).await;
    let exact = format!("Subject: x\r\n\r\n{}\r\n", "a".repeat(1000 - 16));
    assert_eq!(exact.len(), 1000);
    assert_eq!(deliver(server.addr, "a@b.org", &["mmondor@example.org"], &exact).await, 250);
    let over = format!("Subject: x\r\n\r\n{}\r\n", "a".repeat(1000 - 15));
    assert_eq!(deliver(server.addr, "a@b.org", &["mmondor@example.org"], &over).await, 552);
    let m = messages(&db, "mmondor@example.org").await;
    assert_eq!(m.len(), 1);
    assert!(m[0].ends_with(exact.as_bytes()));
}

#[tokio::test]
async fn input_timeout_closes_with_421() {
    let (_db, server) = sqlite_server(|c| c.limits.input_timeout = Some(1)).await;
    let mut c = Client::connect(server.addr).await;
    assert_eq!(c.code().await, 220);
    let (code, text) = c.reply().await.unwrap();
    assert_eq!((code, text.as_str()), (421, "4.4.2 mx.example.org Timeout, closing connection"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn too_many_clients_get_421_and_accept_goes_on() {
    let (_db, server) = sqlite_server(|c| {
        c.limits.max_clients = 1;
        c.limits.stress_threshold = 0;
    })
    .await;
    let mut first = Client::connect(server.addr).await;
    assert_eq!(first.code().await, 220);
    let mut second = Client::connect(server.addr).await;
    assert_eq!(second.reply().await.unwrap(), (421, "4.7.0 mx.example.org Too many clients, try again later".into()));
    assert!(second.closed().await);
    assert_eq!(first.cmd("QUIT").await, 221);
    drop(first);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut third = Client::connect(server.addr).await;
    assert_eq!(third.code().await, 220);
}

#[tokio::test]
async fn shutdown_says_goodbye_at_a_command_boundary() {
    let (_db, server) = sqlite_server(|_| {}).await;
    let mut c = Client::connect(server.addr).await;
    assert_eq!(c.code().await, 220);
    assert_eq!(c.cmd("EHLO c").await, 250);
    assert!(server.stop().await, "sessions drained in time");
    assert_eq!(c.reply().await.unwrap(), (421, "4.3.2 mx.example.org Service shutting down".into()));
    assert!(c.closed().await);
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err(), "listener closed");
}

#[tokio::test]
async fn session_time_cap_ends_even_a_busy_session() {
    let (_db, server) = sqlite_server(|c| {
        c.limits.input_timeout = Some(1);
        c.limits.session_timeout = 2;
    })
    .await;
    let mut c = Client::connect(server.addr).await;
    assert_eq!(c.code().await, 220);
    let start = std::time::Instant::now();
    loop {
        let (code, text) = c.cmd_reply("NOOP").await;
        if code == 421 {
            assert_eq!(text, "4.4.2 mx.example.org Timeout, closing connection");
            break;
        }
        assert_eq!(code, 250);
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "session never capped");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert!(c.closed().await);
}

#[tokio::test]
async fn shutdown_during_data_lets_the_message_finish() {
    let (db, server) = sqlite_server(|_| {}).await;
    let mut c = Client::connect(server.addr).await;
    c.code().await;
    c.cmd("EHLO c").await;
    c.cmd("MAIL FROM:<a@b.org>").await;
    c.cmd("RCPT TO:<mmondor@example.org>").await;
    assert_eq!(c.cmd("DATA").await, 354);
    c.send(b"Subject: in flight\r\n\r\nfirst half\r\n").await;
    let server = std::sync::Arc::new(server);
    let stopping = {
        let s = server.clone();
        tokio::spawn(async move { s.stop().await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    c.send(b"second half\r\n.\r\n").await;
    let (code, text) = c.reply().await.unwrap();
    assert_eq!(code, 250, "the message in flight is committed: {text}");
    assert_eq!(c.reply().await.unwrap(), (421, "4.3.2 mx.example.org Service shutting down".into()));
    assert!(stopping.await.unwrap());
    let m = messages(&db, "mmondor@example.org").await;
    assert_eq!(m.len(), 1, "stored once");
    assert!(m[0].ends_with(b"first half\r\nsecond half\r\n"));
}

/// Stress mode: with every place taken, the connection that has waited longest for a
/// command is closed with the timeout reply and the new client is greeted; a connection
/// in the middle of a command (here: DATA) is not idle and stays.
#[tokio::test]
async fn stress_mode_serves_a_new_client_instead_of_refusing_it() {
    let (_db, server) = sqlite_server(|c| {
        c.limits.max_clients = 2;
        c.limits.stress_threshold = 50;
    })
    .await;
    let mut idle = Client::connect(server.addr).await;
    assert_eq!(idle.code().await, 220);
    let mut sending = Client::connect(server.addr).await;
    assert_eq!(sending.code().await, 220);
    assert_eq!(sending.cmd("EHLO c").await, 250);
    assert_eq!(sending.cmd("MAIL FROM:<a@b.org>").await, 250);
    assert_eq!(sending.cmd("RCPT TO:<mmondor@example.org>").await, 250);
    assert_eq!(sending.cmd("DATA").await, 354);
    sending.send(b"Subject: during stress\r\n").await;
    let mut new = Client::connect(server.addr).await;
    assert_eq!(new.code().await, 220, "served, not refused");
    assert_eq!(idle.reply().await.unwrap().0, 421);
    assert!(idle.closed().await);
    sending.send(b"\r\nbody\r\n.\r\n").await;
    assert_eq!(sending.code().await, 250, "the message in progress is stored");
}
