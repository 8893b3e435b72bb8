//! PROXY protocol v1 and v2 in front of mmsmtpd: the client a trusted proxy names is the
//! client for the limits, `nofrom`, the greeting and `Received:`; a header from anyone
//! else, or none from a proxy, closes the connection.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use common::net::proxy::V2_SIGNATURE;
use common::testing::{Backend, TestDb};
use smtpd::config::NullSender;
use support::{Client, Server, Smtp, config, messages, seed};

async fn serve(proxies: &[&str], tweak: impl FnOnce(&mut smtpd::config::Config)) -> (TestDb, Server) {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let mut cfg = config(&db.url);
    cfg.listen.proxy_networks = proxies.iter().map(|p| p.parse().unwrap()).collect();
    tweak(&mut cfg);
    (db, Server::start(cfg).await)
}

fn v2_tcp4(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&25u16.to_be_bytes());
    h
}

#[tokio::test]
async fn the_named_client_is_the_client() {
    let (db, server) = serve(&["127.0.0.0/8"], |c| c.own.null_sender = NullSender::Nofrom).await;
    db.add_nofrom("192.0.2.*").await;
    for (header, client) in [
        (b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 25\r\n".to_vec(), "192.0.2.9"),
        (v2_tcp4([192, 0, 2, 10], 40001), "192.0.2.10"),
    ] {
        let mut c = Client::connect(server.addr).await;
        c.send(&header).await;
        assert_eq!(c.code().await, 220);
        let (_, ehlo) = c.cmd_reply("EHLO behind.proxy").await;
        assert!(ehlo.contains(&format!("Hello behind.proxy [{client}]")), "{ehlo}");
        // nofrom matches the named client, not the proxy at 127.0.0.1.
        assert_eq!(c.cmd("MAIL FROM:<>").await, 250);
        assert_eq!(c.cmd("RCPT TO:<mmondor@example.org>").await, 250);
        assert_eq!(c.cmd("DATA").await, 354);
        c.send(b"Subject: proxied\r\n\r\nx\r\n.\r\n").await;
        assert_eq!(c.code().await, 250);
        assert_eq!(c.cmd("QUIT").await, 221);
    }
    let m = messages(&db, "mmondor@example.org").await;
    assert_eq!(m.len(), 2);
    assert!(String::from_utf8_lossy(&m[0]).contains("(unknown [192.0.2.9])"));
    assert!(String::from_utf8_lossy(&m[1]).contains("(unknown [192.0.2.10])"));
}

#[tokio::test]
async fn limits_count_the_named_clients() {
    let (_db, server) = serve(&["127.0.0.0/8"], |c| c.limits.max_per_address = 1).await;
    let mut a = Client::connect(server.addr).await;
    a.send(b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 25\r\n").await;
    assert_eq!(a.code().await, 220);
    // Another client through the same proxy is let in...
    let mut b = Client::connect(server.addr).await;
    b.send(b"PROXY TCP4 192.0.2.2 127.0.0.1 1001 25\r\n").await;
    assert_eq!(b.code().await, 220);
    // ...a second connection of the first one is not.
    let mut again = Client::connect(server.addr).await;
    again.send(b"PROXY TCP4 192.0.2.1 127.0.0.1 1002 25\r\n").await;
    let (code, text) = again.reply().await.unwrap();
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("Too many connections from your address"), "{text}");
}

#[tokio::test]
async fn a_proxy_must_send_a_header_and_nobody_else_may() {
    // From a trusted network, SMTP without a header: closed before any greeting.
    let (_db, server) = serve(&["127.0.0.0/8"], |_| {}).await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"EHLO sneaky.example\r\nQUIT\r\n").await;
    assert_eq!(c.line().await, None, "no greeting without a header");
    // A malformed header: closed too.
    let mut c = Client::connect(server.addr).await;
    c.send(b"PROXY TCP4 999.1.1.1 127.0.0.1 1 25\r\n").await;
    assert_eq!(c.line().await, None);
    // A health check (LOCAL) is served as the proxy itself.
    let mut c = Client::connect(server.addr).await;
    let mut local = V2_SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    c.send(&local).await;
    assert_eq!(c.code().await, 220);
    let (_, ehlo) = c.cmd_reply("EHLO check").await;
    assert!(ehlo.contains("[127.0.0.1]"), "{ehlo}");

    // Not a trusted peer: a header (v1 or v2) ends the connection.
    let (_db, server) = serve(&[], |_| {}).await;
    for header in [b"PROXY TCP4 192.0.2.66 127.0.0.1 1 25\r\n".to_vec(), v2_tcp4([192, 0, 2, 66], 1)] {
        let mut c = Client::connect(server.addr).await;
        assert_eq!(c.code().await, 220);
        c.send(&header).await;
        c.send(b"EHLO after.header\r\n").await;
        assert!(c.closed().await, "a header from an untrusted peer must close the connection");
    }
}
