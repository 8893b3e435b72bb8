//! The MUSTs of RFC 5321 and its companions that a public MX is held to, one test per
//! finding of issue 12: each failed on the code before it.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use common::testing::{Backend, TestDb};
use smtpd::config::NullSender;
use smtpd::session::Outcome;
use support::{Client, Server, Smtp, config, messages, seed, setup};

fn stored_text(m: &[Vec<u8>]) -> String {
    assert_eq!(m.len(), 1, "one message stored");
    String::from_utf8(m[0].clone()).unwrap()
}

/// RFC 5321 §2.4: local parts are case-sensitive; the reverse-path and forward-path are
/// kept exactly as given, while the box is found without regard to case.
#[tokio::test]
async fn paths_keep_their_case() {
    let mut t = setup(|_| {}).await;
    t.say("EHLO c").await;
    assert_eq!(t.say("MAIL FROM:<Bounce+ABC=Def@Sender.Example>").await, "250 2.1.0 Sender ok");
    assert_eq!(t.say("RCPT TO:<MMondor@Example.ORG>").await, "250 2.1.5 Recipient ok");
    t.line("DATA").await;
    assert!(t.data(b"Subject: case\r\n\r\nx\r\n.\r\n").await.starts_with("250 "));
    let text = stored_text(&messages(&t.db, "mmondor@example.org").await);
    assert!(text.starts_with("Return-Path: <Bounce+ABC=Def@Sender.Example>\r\n"), "{text}");
    assert!(text.contains("\tfor <MMondor@Example.ORG>; "), "{text}");
}

/// RFC 5321 §4.5.1: `<postmaster>` and postmaster at every served domain reach a box.
#[tokio::test]
async fn postmaster_at_every_served_domain() {
    let mut t = setup(|c| c.own.postmaster = "sales@example.org".into()).await;
    t.db.add_box("a@boxonly.test", 1, 0, 0).await;
    t.say("EHLO c").await;
    t.say("MAIL FROM:<a@b.org>").await;
    assert_eq!(t.say("RCPT TO:<postmaster>").await, "250 2.1.5 Recipient ok");
    // A served domain without a postmaster box of its own: the configured box.
    assert_eq!(t.say("RCPT TO:<Postmaster@BoxOnly.test>").await, "250 2.1.5 Recipient ok");
    // A domain with its own postmaster box keeps it.
    assert_eq!(t.say("RCPT TO:<POSTMASTER@example.org>").await, "250 2.1.5 Recipient ok");
    // Not a served domain: still no relaying.
    assert_eq!(t.say("RCPT TO:<postmaster@elsewhere.test>").await, "550 5.7.1 Relaying denied");
    t.line("DATA").await;
    assert!(t.data(b"Subject: pm\r\n\r\nx\r\n.\r\n").await.starts_with("250 "));
    let text = stored_text(&messages(&t.db, "sales@example.org").await);
    // The first recipient that reached the box: bare <postmaster>, named as its box.
    assert!(text.contains("\tfor <sales@example.org>; "), "{text}");
    assert_eq!(messages(&t.db, "postmaster@example.org").await.len(), 1);
    assert!(messages(&t.db, "a@boxonly.test").await.is_empty());
}

/// RFC 5321 §4.5.3.1.10: `452` for too many recipients is how a client learns to split
/// the transaction; it is not an error, is not tarpitted, and DATA follows.
#[tokio::test]
async fn too_many_recipients_is_not_an_error() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let mut cfg = config(&db.url);
    cfg.limits.max_errors = 5;
    // A tarpitted 452 would outlast the test client's 20 s read timeout.
    cfg.limits.error_delay = 30;
    let server = Server::start(cfg).await;
    let mut c = Client::connect(server.addr).await;
    assert_eq!(c.code().await, 220);
    let mut batch = String::from("EHLO pipe.test\r\nMAIL FROM:<list@sender.test>\r\n");
    for i in 0..120 {
        batch.push_str(&format!("RCPT TO:<member{i}@example.org>\r\n"));
    }
    batch.push_str("DATA\r\n");
    c.send(batch.as_bytes()).await;
    assert_eq!(c.code().await, 250);
    assert_eq!(c.code().await, 250);
    let mut codes = Vec::new();
    for _ in 0..120 {
        codes.push(c.reply().await.expect("reply").0);
    }
    assert_eq!(codes.iter().filter(|&&c| c == 250).count(), 100);
    assert_eq!(codes.iter().filter(|&&c| c == 452).count(), 20);
    assert_eq!(c.code().await, 354);
    c.send(b"Subject: many\r\n\r\nhello\r\n.\r\n").await;
    assert_eq!(c.code().await, 250);
    assert_eq!(c.cmd("QUIT").await, 221);
    // The alias *@example.org sent all 100 accepted recipients to one box: one copy.
    assert_eq!(messages(&db, "mmondor@example.org").await.len(), 1);
}

/// Unknown recipients do not throw away a transaction that has accepted ones: a client
/// with 1 valid and 16 unknown recipients reaches DATA.
#[tokio::test]
async fn unknown_recipients_do_not_end_a_transaction() {
    let mut t = setup(|c| c.limits.max_errors = 5).await;
    t.db.add_box("real@boxonly.test", 1, 0, 0).await;
    t.say("EHLO c").await;
    t.say("MAIL FROM:<a@b.org>").await;
    assert_eq!(t.say("RCPT TO:<real@boxonly.test>").await, "250 2.1.5 Recipient ok");
    for i in 0..16 {
        assert_eq!(t.say(&format!("RCPT TO:<ghost{i}@boxonly.test>")).await, "550 5.1.1 User unknown");
    }
    assert_eq!(t.s.errors(), 0);
    assert!(matches!(t.line("DATA").await, Outcome::Data(r) if r.code == 354));
    assert!(t.data(b"x\r\n.\r\n").await.starts_with("250 "));
    assert_eq!(messages(&t.db, "real@boxonly.test").await.len(), 1);
}

/// `max_unknown_recipients` ends a dictionary attack, but only after the transaction in
/// progress: its DATA is still accepted.
#[tokio::test]
async fn unknown_recipient_limit_finishes_the_transaction_first() {
    let mut t = setup(|c| c.own.max_unknown_recipients = 3).await;
    t.db.add_box("real@boxonly.test", 1, 0, 0).await;
    t.say("EHLO c").await;
    t.say("MAIL FROM:<a@b.org>").await;
    t.say("RCPT TO:<real@boxonly.test>").await;
    for i in 0..3 {
        assert_eq!(t.say(&format!("RCPT TO:<ghost{i}@boxonly.test>")).await, "550 5.1.1 User unknown");
    }
    assert!(matches!(t.line("DATA").await, Outcome::Data(r) if r.code == 354));
    assert!(t.data(b"x\r\n.\r\n").await.starts_with("250 "));
    match t.line("MAIL FROM:<a@b.org>").await {
        Outcome::Close(r) => assert_eq!(r.code, 421, "{r:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(messages(&t.db, "real@boxonly.test").await.len(), 1);

    // Nothing accepted: the connection ends at the limit.
    let mut u = setup(|c| c.own.max_unknown_recipients = 2).await;
    u.say("EHLO c").await;
    u.say("MAIL FROM:<a@b.org>").await;
    assert_eq!(u.say("RCPT TO:<nobody@elsewhere.test>").await, "550 5.7.1 Relaying denied");
    match u.line("RCPT TO:<nobody2@elsewhere.test>").await {
        Outcome::Close(r) => {
            assert_eq!(r.to_bytes(), b"421 4.7.0 mx.example.org Too many unknown recipients, closing connection\r\n");
        }
        other => panic!("{other:?}"),
    }
}

/// RFC 1123 §5.2.9, RFC 5321 §4.5.5: an MX accepts the null reverse-path by default.
#[tokio::test]
async fn null_reverse_path_accepted_by_default() {
    let mut t = setup(|_| {}).await;
    assert_eq!(t.s.data_limits().max_size, 10_485_760);
    t.say("EHLO c").await;
    assert_eq!(t.say("MAIL FROM:<>").await, "250 2.1.0 Sender ok");
    t.say("RCPT TO:<mmondor@example.org>").await;
    t.line("DATA").await;
    assert!(t.data(b"Subject: bounce\r\n\r\nx\r\n.\r\n").await.starts_with("250 "));
    let text = stored_text(&messages(&t.db, "mmondor@example.org").await);
    assert!(text.starts_with("Return-Path: <>\r\n"), "{text}");
}

/// RFC 5321 §6.3: a loop is detected at no fewer than 100 hops.
#[tokio::test]
async fn hop_limit_is_at_least_100() {
    let mut t = setup(|_| {}).await;
    for (hops, want) in [(100, "250 "), (101, "554 5.4.6")] {
        t.say("EHLO c").await;
        t.say("MAIL FROM:<a@b.org>").await;
        t.say("RCPT TO:<mmondor@example.org>").await;
        t.line("DATA").await;
        let mut body = "Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n".repeat(hops);
        body.push_str("\r\nloop\r\n.\r\n");
        let reply = t.data(body.as_bytes()).await;
        assert!(reply.starts_with(want), "{hops}: {reply}");
    }
}

/// RFC 5321 §4.4 and RFC 5322: the `Received:` field parses whatever the client called
/// itself.
#[tokio::test]
async fn odd_helo_names_leave_a_parseable_trace() {
    for (helo, shown) in [("x(unbalanced;", "\"x(unbalanced;\""), ("jösé.example", "xn--js-cja4c.example")] {
        let mut t = setup(|_| {}).await;
        t.say(&format!("EHLO {helo}")).await;
        t.say("MAIL FROM:<a@b.org>").await;
        t.say("RCPT TO:<mmondor@example.org>").await;
        t.line("DATA").await;
        assert!(t.data(b"Subject: helo\r\n\r\nx\r\n.\r\n").await.starts_with("250 "));
        let text = stored_text(&messages(&t.db, "mmondor@example.org").await);
        assert!(text.contains(&format!("Received: from {shown} (unknown [192.0.2.7])\r\n")), "{text}");
        assert!(text.is_ascii(), "{text}");
        let parsed = mail_parser::MessageParser::new().parse(text.as_bytes()).unwrap();
        let received = parsed.received().unwrap_or_else(|| panic!("Received: does not parse: {text}"));
        assert!(received.by.is_some(), "{received:?}");
        assert_eq!(parsed.subject(), Some("helo"));
    }
}

/// RFC 5890, RFC 6531: the A-label and U-label forms of a domain are the same domain.
#[tokio::test]
async fn a_labels_and_u_labels_are_one_domain() {
    let mut t = setup(|_| {}).await;
    t.db.add_box("jösé@exämple.test", 1, 0, 0).await;
    t.db.add_box("ann@xn--bcher-kva.test", 1, 0, 0).await;
    t.say("EHLO c").await;
    t.say("MAIL FROM:<a@b.org> SMTPUTF8").await;
    assert_eq!(t.say("RCPT TO:<jösé@xn--exmple-cua.test>").await, "250 2.1.5 Recipient ok");
    assert_eq!(t.say("RCPT TO:<Ann@Bücher.test>").await, "250 2.1.5 Recipient ok");
    t.line("DATA").await;
    assert!(t.data(b"x\r\n.\r\n").await.starts_with("250 "));
    assert_eq!(messages(&t.db, "jösé@exämple.test").await.len(), 1);
    assert_eq!(messages(&t.db, "ann@xn--bcher-kva.test").await.len(), 1);
}

/// RFC 3463: `552 5.2.2` when the announced message can never fit in the box, `452
/// 4.2.2` while it could fit later.
#[tokio::test]
async fn full_box_permanent_or_temporary() {
    let mut t = setup(|_| {}).await;
    t.db.add_box("small@example.org", 1, 1000, 0).await;
    t.db.add_box("busy@example.org", 1, 3000, 0).await;
    t.db.sql("UPDATE box SET box_size = 2500 WHERE box_address = 'busy@example.org'").await;
    t.say("EHLO c").await;
    t.say("MAIL FROM:<a@b.org> SIZE=2000").await;
    assert_eq!(t.say("RCPT TO:<small@example.org>").await, "552 5.2.2 Message too big for the mailbox");
    assert_eq!(t.say("RCPT TO:<busy@example.org>").await, "452 4.2.2 Mailbox full");
}

/// RFC 1870: a message within the advertised SIZE is not refused for its line count.
#[tokio::test]
async fn line_count_does_not_undercut_size() {
    let mut t = setup(|_| {}).await;
    t.say("EHLO c").await;
    t.say("MAIL FROM:<a@b.org> SIZE=840024").await;
    t.say("RCPT TO:<mmondor@example.org>").await;
    t.line("DATA").await;
    // 420 012 short lines, 840 024 bytes: far over the old 200 000-line limit.
    let mut body = "Subject: lines\r\n\r\n".to_string();
    body.push_str(&"\r\n".repeat((840_024 - body.len()) / 2));
    assert_eq!(body.len(), 840_024);
    body.push_str(".\r\n");
    assert!(t.data(body.as_bytes()).await.starts_with("250 "));
}

/// RFC 5321 §4.1.1, RFC 1870, RFC 6531: the right code and text for each misuse.
#[tokio::test]
async fn syntax_and_sequence_codes() {
    let mut t = setup(|_| {}).await;
    assert_eq!(t.say("DATA").await, "503 5.5.1 Need MAIL first");
    t.say("HELO plain.test").await;
    assert_eq!(t.say("MAIL FROM:<a@b.org> SMTPUTF8").await, "501 5.5.4 MAIL parameters need EHLO");
    assert_eq!(t.say("MAIL FROM:<a@b.org> SIZE=10").await, "501 5.5.4 MAIL parameters need EHLO");
    assert_eq!(t.say("VRFY").await, "501 5.5.4 Syntax error in parameters or arguments");
    assert_eq!(t.say("EXPN").await, "501 5.5.4 Syntax error in parameters or arguments");
    t.say("EHLO ext.test").await;
    assert_eq!(t.say("MAIL FROM:<a@b.org> SIZE=-1").await, "501 5.5.4 Syntax error in MAIL parameters");
    assert_eq!(t.say("MAIL FROM:<a@b.org> SIZE=1 SIZE=2").await, "501 5.5.4 Syntax error in MAIL parameters");
    assert_eq!(t.say("MAIL FROM:<a@b.org> SMTPUTF8=yes").await, "501 5.5.4 Syntax error in MAIL parameters");
    assert_eq!(t.say("MAIL FROM:<a@b.org> RET=FULL").await, "555 5.5.4 Unsupported MAIL parameter");
    assert_eq!(t.say("DATA").await, "503 5.5.1 Need MAIL first");
    assert_eq!(t.say("MAIL FROM:<a@b.org>").await, "250 2.1.0 Sender ok");
    assert_eq!(t.say("DATA").await, "503 5.5.1 Need RCPT first");
}

/// HELO then MAIL without parameters: plain SMTP in the trace, never UTF8SMTP.
#[tokio::test]
async fn helo_session_traced_as_smtp() {
    let mut t = setup(|_| {}).await;
    t.say("HELO plain.test").await;
    t.say("MAIL FROM:<a@b.org>").await;
    t.say("RCPT TO:<mmondor@example.org>").await;
    t.line("DATA").await;
    assert!(t.data(b"x\r\n.\r\n").await.starts_with("250 "));
    let text = stored_text(&messages(&t.db, "mmondor@example.org").await);
    assert!(text.contains(") with SMTP\r\n"), "{text}");
}

/// An IPv4 client of a dual-stack `[::]` listener is an IPv4 client for every rule:
/// `nofrom` matches it and `Received:` shows its IPv4 address.
#[tokio::test]
async fn ipv4_mapped_clients_are_ipv4() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    db.add_nofrom("127.0.0.1").await;
    let mut cfg = config(&db.url);
    cfg.own.null_sender = NullSender::Nofrom;
    let server = Server::start_at(cfg, "[::]:0").await;
    let mut c = Client::connect(std::net::SocketAddr::from(([127, 0, 0, 1], server.addr.port()))).await;
    assert_eq!(c.code().await, 220);
    let (_, ehlo) = c.cmd_reply("EHLO v4.test").await;
    assert!(ehlo.contains("Hello v4.test [127.0.0.1]"), "{ehlo}");
    assert_eq!(c.cmd("MAIL FROM:<>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<mmondor@example.org>").await, 250);
    assert_eq!(c.cmd("DATA").await, 354);
    c.send(b"Subject: v4\r\n\r\nx\r\n.\r\n").await;
    assert_eq!(c.code().await, 250);
    let text = stored_text(&messages(&db, "mmondor@example.org").await);
    assert!(text.contains("(unknown [127.0.0.1])"), "{text}");
}
