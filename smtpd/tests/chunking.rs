//! CHUNKING (RFC 3030): BDAT over a real connection, pipelined with MAIL and RCPT; the
//! size limit per chunk and in total; chunks of a refused or failed transaction are read
//! and dropped, never taken for commands.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use common::store::Usage;
use common::testing::{Backend, TestDb};
use support::{Client, Server, Smtp, config, consistent, messages, seed};

async fn server(tweak: impl FnOnce(&mut smtpd::config::Config)) -> (TestDb, Server) {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let mut cfg = config(&db.url);
    tweak(&mut cfg);
    (db, Server::start(cfg).await)
}

async fn greeted(server: &Server) -> Client<tokio::net::TcpStream> {
    let mut c = Client::connect(server.addr).await;
    assert_eq!(c.code().await, 220);
    let (code, ehlo) = c.cmd_reply("EHLO chunky.test").await;
    assert_eq!(code, 250);
    assert!(ehlo.lines().any(|l| l == "CHUNKING"), "{ehlo}");
    c
}

/// Replies to a pipelined batch: code and text of each.
async fn replies(c: &mut Client<tokio::net::TcpStream>, n: usize) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(c.reply().await.expect("reply"));
    }
    out
}

#[tokio::test]
async fn pipelined_bdat_transaction_stores_the_octets_as_sent() {
    let (db, server) = server(|_| {}).await;
    let mut c = greeted(&server).await;
    // Octets a DATA receiver would treat specially: a leading dot and an end marker.
    let first = b"Subject: chunks\r\n\r\n.leading dot\r\n";
    let second = b".\r\nafter the dot line\r\n";
    let mut batch = b"MAIL FROM:<a@b.org> BODY=8BITMIME\r\nRCPT TO:<mmondor@example.org>\r\n".to_vec();
    batch.extend_from_slice(format!("BDAT {}\r\n", first.len()).as_bytes());
    batch.extend_from_slice(first);
    batch.extend_from_slice(format!("BDAT {} LAST\r\n", second.len()).as_bytes());
    batch.extend_from_slice(second);
    c.send(&batch).await;
    let r = replies(&mut c, 4).await;
    assert_eq!(r[0].0, 250);
    assert_eq!(r[1].0, 250);
    assert_eq!(r[2], (250, format!("2.0.0 {} octets received", first.len())));
    assert_eq!(r[3].0, 250);
    assert!(r[3].1.starts_with("2.0.0 Ok, queued as "), "{r:?}");
    assert_eq!(c.cmd("QUIT").await, 221);
    let m = messages(&db, "mmondor@example.org").await;
    assert_eq!(m.len(), 1);
    assert!(m[0].ends_with(&[&first[..], &second[..]].concat()), "{}", String::from_utf8_lossy(&m[0]));
    consistent(&db, "mmondor@example.org").await;
}

#[tokio::test]
async fn refused_chunks_are_read_and_dropped() {
    let (db, server) = server(|_| {}).await;
    let mut c = greeted(&server).await;
    // No transaction: the chunk (which looks like commands) is consumed, not executed.
    let evil = b"MAIL FROM:<evil@b.org>\r\nRCPT TO:<mmondor@example.org>\r\n";
    c.send(format!("BDAT {} LAST\r\n", evil.len()).as_bytes()).await;
    c.send(evil).await;
    assert_eq!(c.reply().await.unwrap(), (503, "5.5.1 Need MAIL first".into()));
    assert_eq!(c.cmd("NOOP").await, 250);
    // A transaction without accepted recipients.
    assert_eq!(c.cmd("MAIL FROM:<a@b.org>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<nobody@elsewhere.test>").await, 550);
    c.send(b"BDAT 6 LAST\r\nQUIT\r\n").await;
    assert_eq!(c.reply().await.unwrap(), (503, "5.5.1 Need RCPT first".into()));
    // DATA cannot end a message BDAT began.
    assert_eq!(c.cmd("RCPT TO:<mmondor@example.org>").await, 250);
    c.send(b"BDAT 3\r\nabc").await;
    assert_eq!(c.code().await, 250);
    assert_eq!(c.cmd("DATA").await, 503);
    c.send(b"BDAT 0 LAST\r\n").await;
    assert_eq!(c.code().await, 250);
    assert_eq!(c.cmd("QUIT").await, 221);
    let m = messages(&db, "mmondor@example.org").await;
    assert_eq!(m.len(), 1);
    assert!(m[0].ends_with(b"abc"));
}

#[tokio::test]
async fn size_limit_per_chunk_and_in_total() {
    let (db, server) = server(|c| c.own.max_message_size = 100).await;
    let mut c = greeted(&server).await;
    // One chunk over the limit.
    assert_eq!(c.cmd("MAIL FROM:<a@b.org>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<mmondor@example.org>").await, 250);
    c.send(format!("BDAT 101 LAST\r\n{}", "x".repeat(101)).as_bytes()).await;
    assert_eq!(c.reply().await.unwrap(), (552, "5.3.4 Message too big".into()));
    // Two chunks within it, a third past it: the transaction fails there, and the chunk
    // pipelined after the failure is read and refused.
    assert_eq!(c.cmd("MAIL FROM:<a@b.org>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<mmondor@example.org>").await, 250);
    let mut batch = Vec::new();
    for (size, last) in [(40, ""), (40, ""), (40, ""), (10, " LAST")] {
        batch.extend_from_slice(format!("BDAT {size}{last}\r\n{}", "y".repeat(size)).as_bytes());
    }
    c.send(&batch).await;
    let codes: Vec<u16> = replies(&mut c, 4).await.into_iter().map(|r| r.0).collect();
    assert_eq!(codes, [250, 250, 552, 503]);
    // Exactly at the limit is fine.
    assert_eq!(c.cmd("MAIL FROM:<a@b.org>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<mmondor@example.org>").await, 250);
    c.send(format!("BDAT 50\r\n{0}BDAT 50 LAST\r\n{0}", "z".repeat(50)).as_bytes()).await;
    let codes: Vec<u16> = replies(&mut c, 2).await.into_iter().map(|r| r.0).collect();
    assert_eq!(codes, [250, 250]);
    assert_eq!(c.cmd("QUIT").await, 221);
    let m = messages(&db, "mmondor@example.org").await;
    assert_eq!(m.len(), 1);
    assert!(m[0].ends_with("z".repeat(100).as_bytes()));
}

#[tokio::test]
async fn bare_line_ends_and_bad_bdat_lines() {
    let (db, server) = server(|_| {}).await;
    let mut c = greeted(&server).await;
    assert_eq!(c.cmd("MAIL FROM:<a@b.org>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<mmondor@example.org>").await, 250);
    c.send(b"BDAT 5 LAST\r\na\nb\r\n").await;
    assert_eq!(c.reply().await.unwrap(), (554, "5.5.2 Bare CR or LF not allowed".into()));
    // A chunk size that cannot be read: the octets after it cannot be told from
    // commands, so the connection ends.
    c.send(b"BDAT lots\r\nQUIT\r\n").await;
    assert_eq!(c.reply().await.unwrap().0, 501);
    assert!(c.closed().await);
    assert_eq!(consistent(&db, "mmondor@example.org").await, Usage::default());
}
