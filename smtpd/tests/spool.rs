//! Large messages wait in a spool file, not in memory (issue 16): what arrives past
//! `[smtpd] spool_threshold` goes to an unnamed file in `spool_dir` and is read back at
//! the end, by DATA and by BDAT, with the size limit still counted over the whole
//! message; unless the messages past the threshold fit in `[smtpd] spool_memory`
//! together.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use common::testing::{Backend, TestDb};
use smtpd::config::Config;
use support::{Client, Server, Smtp, config, messages, seed};

const THRESHOLD: usize = 64 * 1024;

async fn setup(tweak: impl FnOnce(&mut Config)) -> (TestDb, Server) {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let mut cfg = config(&db.url);
    cfg.own.spool_threshold = THRESHOLD;
    // Every message past the threshold goes to the spool, unless a test allows memory.
    cfg.own.spool_memory = 0;
    tweak(&mut cfg);
    (db, Server::start(cfg).await)
}

/// A message of about `size` octets whose lines start with dots now and then (stuffed on
/// the wire): `(as sent after DATA, as it must be stored)`.
fn message(size: usize) -> (Vec<u8>, Vec<u8>) {
    let (mut wire, mut stored) = (Vec::new(), Vec::new());
    let head = b"Subject: spooled\r\n\r\n";
    wire.extend_from_slice(head);
    stored.extend_from_slice(head);
    let mut i = 0usize;
    while stored.len() < size {
        let line = format!(
            "{}line {i} of a large message, with some text to fill it up\r\n",
            if i.is_multiple_of(7) { "." } else { "" }
        );
        if line.starts_with('.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(line.as_bytes());
        stored.extend_from_slice(line.as_bytes());
        i += 1;
    }
    wire.extend_from_slice(b".\r\n");
    (wire, stored)
}

async fn data(server: &Server, wire: &[u8]) -> (u16, String) {
    let mut c = Client::connect(server.addr).await;
    assert_eq!(c.code().await, 220);
    c.cmd("EHLO c").await;
    assert_eq!(c.cmd("MAIL FROM:<a@b.test>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<mmondor@example.org>").await, 250);
    assert_eq!(c.cmd("DATA").await, 354);
    c.send(wire).await;
    c.reply().await.unwrap()
}

/// The message sent with BDAT in `parts` chunks (the last with LAST): each chunk's reply.
async fn bdat(server: &Server, message: &[u8], parts: usize) -> Vec<(u16, String)> {
    let mut c = Client::connect(server.addr).await;
    assert_eq!(c.code().await, 220);
    c.cmd("EHLO c").await;
    assert_eq!(c.cmd("MAIL FROM:<a@b.test>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<mmondor@example.org>").await, 250);
    let chunks: Vec<&[u8]> = message.chunks(message.len().div_ceil(parts)).collect();
    let mut replies = Vec::new();
    for (i, part) in chunks.iter().enumerate() {
        let last = if i + 1 == chunks.len() { " LAST" } else { "" };
        c.send(format!("BDAT {}{last}\r\n", part.len()).as_bytes()).await;
        c.send(part).await;
        replies.push(c.reply().await.unwrap());
    }
    replies
}

fn body_of(stored: &[u8]) -> &[u8] {
    let at = stored.windows(18).position(|w| w == b"Subject: spooled\r\n").unwrap();
    &stored[at..]
}

#[tokio::test]
async fn data_and_bdat_past_the_threshold_are_stored_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().to_str().unwrap().to_owned();
    let (db, server) = setup(|c| c.own.spool_dir = spool).await;
    let (wire, stored) = message(2 * 1024 * 1024);
    let (code, text) = data(&server, &wire).await;
    assert_eq!(code, 250, "{text}");

    // BDAT: three chunks, the message as is (no stuffing).
    for (i, (code, text)) in bdat(&server, &stored, 3).await.into_iter().enumerate() {
        assert_eq!(code, 250, "chunk {i}: {text}");
    }
    let kept = messages(&db, "mmondor@example.org").await;
    assert_eq!(kept.len(), 2);
    for m in &kept {
        assert!(body_of(m) == stored.as_slice(), "stored exactly ({} octets)", stored.len());
    }
    // Nothing is left behind in the spool directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_spool_that_cannot_be_written_is_a_temporary_error_for_large_messages_only() {
    let (db, server) = setup(|c| c.own.spool_dir = "/nonexistent/mmmail-spool".into()).await;
    let (small, _) = message(THRESHOLD / 4);
    assert_eq!(data(&server, &small).await.0, 250, "below the threshold nothing is spooled");
    let (large, _) = message(4 * THRESHOLD);
    let (code, text) = data(&server, &large).await;
    assert_eq!((code, text.starts_with("4.3.0")), (451, true), "{text}");
    assert_eq!(messages(&db, "mmondor@example.org").await.len(), 1);
}

#[tokio::test]
async fn the_size_limit_counts_the_spooled_octets() {
    let (db, server) = setup(|c| c.own.max_message_size = 256 * 1024).await;
    let (fits, _) = message(200 * 1024);
    assert_eq!(data(&server, &fits).await.0, 250);
    let (over, _) = message(300 * 1024);
    let (code, text) = data(&server, &over).await;
    assert_eq!(code, 552, "{text}");
    assert_eq!(messages(&db, "mmondor@example.org").await.len(), 1);
}

/// Within `spool_memory` a message past the threshold stays in memory (a spool that
/// cannot be written does not matter to it) while it holds at most 1/32 of it, and
/// gives its share back when it is stored: more messages one after another than the
/// allowance holds all fit. (Messages in flight together: `session::tests`.)
#[tokio::test]
async fn messages_past_the_threshold_share_the_memory_allowance() {
    const ALLOWANCE: usize = 4 * 1024 * 1024;
    let (db, server) = setup(|c| {
        c.own.spool_dir = "/nonexistent/mmmail-spool".into();
        c.own.spool_memory = ALLOWANCE;
    })
    .await;
    // Past the threshold, within 1/32 of the allowance: 45 of them are more than it.
    let (fits, _) = message(ALLOWANCE / 40);
    assert!(fits.len() > THRESHOLD && fits.len() <= ALLOWANCE / 32);
    for i in 0..45 {
        let (code, text) = data(&server, &fits).await;
        assert_eq!(code, 250, "message {i}: {text}");
    }
    // BDAT too.
    let (_, stored) = message(ALLOWANCE / 40);
    for (i, (code, text)) in bdat(&server, &stored, 2).await.into_iter().enumerate() {
        assert_eq!(code, 250, "chunk {i}: {text}");
    }
    // More than 1/32 of the allowance: to the spool, which cannot be written.
    let (over, _) = message(ALLOWANCE / 16);
    let (code, text) = data(&server, &over).await;
    assert_eq!((code, text.starts_with("4.3.0")), (451, true), "{text}");
    assert_eq!(messages(&db, "mmondor@example.org").await.len(), 46);
}
