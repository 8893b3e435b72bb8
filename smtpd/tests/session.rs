//! Session transcripts against a SQLite store: every command in every state, no sockets
//! (style.md P11 (b)).

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use common::testing::{Backend, TestDb};
use smtpd::config::NullSender;
use smtpd::session::Outcome;
use support::{NAME, T, config, seed, session, setup};

#[tokio::test]
async fn greeting_and_ehlo() {
    let mut t = setup(|_| {}).await;
    assert_eq!(t.s.greeting().to_bytes(), format!("220 {NAME} ESMTP mmsmtpd-rs ready\r\n").into_bytes());
    let ehlo = t.say("EHLO client.test").await;
    assert_eq!(
        ehlo,
        format!(
            "250 {NAME} Hello client.test [192.0.2.7]|SIZE 10485760|8BITMIME|PIPELINING|ENHANCEDSTATUSCODES|SMTPUTF8|CHUNKING"
        )
    );
    assert_eq!(t.say("HELO client.test").await, format!("250 {NAME} Hello client.test [192.0.2.7]"));
    assert_eq!(t.say("EHLO").await, "501 5.5.4 Invalid HELO/EHLO argument");
}

#[tokio::test]
async fn starttls_advertised_only_when_configured_and_not_active() {
    let dir = tempfile::tempdir().unwrap();
    let cert = common::testing::TestCert::generate(dir.path());
    let mut t = setup(|c| c.tls = Some(support::tls_config(&cert))).await;
    assert!(t.say("EHLO c").await.ends_with("|STARTTLS"));
    t.say("MAIL FROM:<a@b.org>").await;
    match t.line("STARTTLS").await {
        Outcome::StartTls(r) => assert_eq!(r.code, 220),
        other => panic!("{other:?}"),
    }
    t.s.tls_started();
    // RFC 3207: everything before TLS is forgotten, including the greeting.
    assert_eq!(t.say("MAIL FROM:<a@b.org>").await, "503 5.5.1 Send HELO/EHLO first");
    assert!(!t.say("EHLO c").await.contains("STARTTLS"));
    assert_eq!(t.say("STARTTLS").await, "503 5.5.1 TLS already active");
    let mut plain = setup(|_| {}).await;
    assert_eq!(plain.say("STARTTLS").await, "502 5.5.1 Command not implemented");
}

#[tokio::test]
async fn commands_out_of_order() {
    let mut t = setup(|_| {}).await;
    assert_eq!(t.say("MAIL FROM:<a@b.org>").await, "503 5.5.1 Send HELO/EHLO first");
    assert_eq!(t.say("RCPT TO:<mmondor@example.org>").await, "503 5.5.1 Need MAIL first");
    assert_eq!(t.say("DATA").await, "503 5.5.1 Need MAIL first");
    t.say("HELO c").await;
    assert_eq!(t.say("DATA").await, "503 5.5.1 Need MAIL first");
    assert_eq!(t.say("MAIL FROM:<a@b.org>").await, "250 2.1.0 Sender ok");
    assert_eq!(t.say("MAIL FROM:<a@b.org>").await, "503 5.5.1 Sender already specified");
    assert_eq!(t.say("DATA").await, "503 5.5.1 Need RCPT first");
    assert_eq!(t.say("RSET").await, "250 2.0.0 Ok");
    assert_eq!(t.say("RCPT TO:<mmondor@example.org>").await, "503 5.5.1 Need MAIL first");
    assert_eq!(t.say("NOOP").await, "250 2.0.0 Ok");
    assert_eq!(t.say("VRFY mmondor").await, "252 2.5.2 Cannot verify, but will accept and try delivery");
    assert_eq!(t.say("EXPN list").await, "502 5.5.1 Command not implemented");
    assert_eq!(t.say("BEER").await, "500 5.5.2 Command unrecognized");
    assert!(t.say("HELP").await.starts_with("214 2.0.0 Commands:"));
    assert_eq!(t.s.line_too_long(), Outcome::Reply(smtpd::proto::reply::texts::LINE_TOO_LONG.into()));
    match t.line("QUIT").await {
        Outcome::Close(r) => assert_eq!(r.to_bytes(), format!("221 2.0.0 {NAME} closing connection\r\n").into_bytes()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn require_helo_can_be_turned_off() {
    let mut t = setup(|c| c.own.require_helo = false).await;
    assert_eq!(t.say("MAIL FROM:<a@b.org>").await, "250 2.1.0 Sender ok");
}

#[tokio::test]
async fn recipients() {
    let mut t = setup(|c| c.own.postmaster = "postmaster@example.org".into()).await;
    let u = 1;
    t.db.add_box("full@example.org", u, 0, 1).await;
    t.db.sql("UPDATE box SET box_mails = 1 WHERE box_address = 'full@example.org'").await;
    t.db.add_box("tight@example.org", u, 1000, 0).await;
    t.say("EHLO c").await;
    assert_eq!(t.say("MAIL FROM:<a@b.org> SIZE=2000").await, "250 2.1.0 Sender ok");
    assert_eq!(t.say("RCPT TO:<mmondor@example.org>").await, "250 2.1.5 Recipient ok");
    assert_eq!(t.say("RCPT TO:<MMondor@Example.ORG>").await, "250 2.1.5 Recipient ok");
    assert_eq!(t.say("RCPT TO:<whoever@example.org>").await, "250 2.1.5 Recipient ok");
    assert_eq!(t.say("RCPT TO:<sales-eu@example.org>").await, "250 2.1.5 Recipient ok");
    assert_eq!(t.say("RCPT TO:<Postmaster>").await, "250 2.1.5 Recipient ok");
    assert_eq!(t.say("RCPT TO:<bob@elsewhere.test>").await, "550 5.7.1 Relaying denied");
    assert_eq!(t.say("RCPT TO:<full@example.org>").await, "452 4.2.2 Mailbox full");
    // SIZE=2000 announced, box limit 1000 bytes: it can never fit (RFC 3463 5.2.2).
    assert_eq!(t.say("RCPT TO:<tight@example.org>").await, "552 5.2.2 Message too big for the mailbox");
    assert_eq!(t.say("RCPT TO:<x@@example.org>").await, "501 5.1.3 Bad recipient address syntax");
    assert_eq!(t.say("RCPT TO:<x@example.org> NOTIFY=NEVER").await, "555 5.5.4 Unsupported RCPT parameter");
    assert_eq!(t.say("RCPT TO:<jö@example.org>").await, "553 5.6.7 Non-ASCII address requires SMTPUTF8");
}

#[tokio::test]
async fn unknown_user_needs_a_served_domain() {
    let mut t = setup(|_| {}).await;
    t.db.add_box("a@boxonly.test", 1, 0, 0).await;
    t.say("EHLO c").await;
    t.say("MAIL FROM:<a@b.org>").await;
    assert_eq!(t.say("RCPT TO:<b@boxonly.test>").await, "550 5.1.1 User unknown");
}

#[tokio::test]
async fn max_recipients() {
    let mut t = setup(|c| c.own.max_recipients = 2).await;
    t.say("EHLO c").await;
    t.say("MAIL FROM:<a@b.org>").await;
    assert_eq!(t.say("RCPT TO:<a1@example.org>").await, "250 2.1.5 Recipient ok");
    assert_eq!(t.say("RCPT TO:<a2@example.org>").await, "250 2.1.5 Recipient ok");
    assert_eq!(t.say("RCPT TO:<a3@example.org>").await, "452 4.5.3 Too many recipients");
}

#[tokio::test]
async fn mail_parameters_and_size() {
    let mut t = setup(|c| c.own.max_message_size = 1000).await;
    t.say("EHLO c").await;
    assert_eq!(t.say("MAIL FROM:<a@b.org> SIZE=1001").await, "552 5.3.4 Message size exceeds fixed maximum");
    assert_eq!(t.say("MAIL FROM:<a@b.org> RET=FULL").await, "555 5.5.4 Unsupported MAIL parameter");
    assert_eq!(t.say("MAIL FROM:a@b.org").await, "501 5.1.7 Bad sender address syntax");
    assert_eq!(t.say("MAIL FROM:<jö@b.org>").await, "553 5.6.7 Non-ASCII address requires SMTPUTF8");
    assert_eq!(t.say("MAIL FROM:<jö@b.org> SMTPUTF8 SIZE=1000 BODY=8BITMIME").await, "250 2.1.0 Sender ok");
    assert_eq!(t.say("RCPT TO:<jö@example.org>").await, "250 2.1.5 Recipient ok");
}

#[tokio::test]
async fn null_sender_and_nofrom() {
    // RFC 5321 §4.5.5: the default accepts bounces from everyone.
    let mut open = setup(|_| {}).await;
    open.say("EHLO c").await;
    assert_eq!(open.say("MAIL FROM:<>").await, "250 2.1.0 Sender ok");
    // mmmail's restriction, turned on by the administrator.
    let mut t = setup(|c| c.own.null_sender = NullSender::Nofrom).await;
    t.say("EHLO c").await;
    assert_eq!(t.say("MAIL FROM:<>").await, "550 5.7.1 Null sender not accepted from your host");
    t.db.add_nofrom("192.0.2.*").await;
    assert_eq!(t.say("MAIL FROM:<>").await, "250 2.1.0 Sender ok");
}

#[tokio::test]
async fn delivery_with_trace_fields_and_dedup() {
    let mut t = setup(|_| {}).await;
    t.say("EHLO client.test").await;
    t.say("MAIL FROM:<sender@origin.test>").await;
    t.say("RCPT TO:<mmondor@example.org>").await;
    t.say("RCPT TO:<alias-hit@example.org>").await; // same box through *@example.org
    t.say("RCPT TO:<sales-x@example.org>").await;
    assert!(matches!(t.line("DATA").await, Outcome::Data(r) if r.code == 354));
    let reply = t.data(b"Subject: hi\r\n\r\n..dot\r\n.\r\n").await;
    assert!(reply.starts_with("250 2.0.0 Ok, queued as "), "{reply}");
    let id = reply.rsplit(' ').next().unwrap().to_string();
    assert_eq!(id.len(), 16);
    let m = support::messages(&t.db, "mmondor@example.org").await;
    assert_eq!(m.len(), 1, "one copy per box");
    let text = String::from_utf8(m[0].clone()).unwrap();
    assert!(
        text.starts_with("Return-Path: <sender@origin.test>\r\nReceived: from client.test (unknown [192.0.2.7])\r\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("\tby {NAME} (mmsmtpd-rs) with ESMTP\r\n\tid {id}\r\n\tfor <mmondor@example.org>; ")),
        "{text}"
    );
    assert!(text.ends_with(" +0000\r\nSubject: hi\r\n\r\n.dot\r\n"), "{text}");
    let s = support::messages(&t.db, "sales@example.org").await;
    assert!(String::from_utf8_lossy(&s[0]).contains("for <sales-x@example.org>;"));
    support::consistent(&t.db, "mmondor@example.org").await;
    // The transaction is over: a new one needs MAIL.
    assert_eq!(t.say("RCPT TO:<mmondor@example.org>").await, "503 5.5.1 Need MAIL first");
}

#[tokio::test]
async fn refused_messages_store_nothing() {
    let mut t = setup(|c| {
        c.own.max_message_size = 100;
        c.own.max_hops = 2;
    })
    .await;
    let cases: [(&[u8], &str); 3] = [
        (b"a\nb\r\n.\r\n", "554 5.5.2 Bare CR or LF not allowed"),
        (&[b'x'; 200], "552 5.3.4 Message too big"),
        (b"Received: a\r\nReceived: b\r\nReceived: c\r\n\r\nloop\r\n.\r\n", "554 5.4.6 Too many hops, mail loop?"),
    ];
    for (body, want) in cases {
        t.say("EHLO c").await;
        t.say("MAIL FROM:<a@b.org>").await;
        t.say("RCPT TO:<mmondor@example.org>").await;
        t.line("DATA").await;
        let raw = if body.ends_with(b".\r\n") { body.to_vec() } else { [body, b"\r\n.\r\n"].concat() };
        assert_eq!(t.data(&raw).await, want);
    }
    // RSET and QUIT in a transaction store nothing either.
    t.say("MAIL FROM:<a@b.org>").await;
    t.say("RCPT TO:<mmondor@example.org>").await;
    t.say("RSET").await;
    assert_eq!(support::consistent(&t.db, "mmondor@example.org").await, common::store::Usage::default());
}

#[tokio::test]
async fn exactly_at_the_hop_limit_is_accepted() {
    let mut t = setup(|c| c.own.max_hops = 2).await;
    t.say("EHLO c").await;
    t.say("MAIL FROM:<a@b.org>").await;
    t.say("RCPT TO:<mmondor@example.org>").await;
    t.line("DATA").await;
    assert!(t.data(b"Received: a\r\nReceived: b\r\n\r\nok\r\n.\r\n").await.starts_with("250 "));
}

#[tokio::test]
async fn error_limit_closes_with_421() {
    let mut t = setup(|c| c.limits.max_errors = 3).await;
    assert_eq!(t.say("BAD1").await, "500 5.5.2 Command unrecognized");
    assert_eq!(t.say("BAD2").await, "500 5.5.2 Command unrecognized");
    match t.line("BAD3").await {
        Outcome::Close(r) => {
            assert_eq!(r.to_bytes(), format!("421 4.7.0 {NAME} Too many errors, closing connection\r\n").into_bytes())
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn database_failure_is_a_temporary_error() {
    let mut t = setup(|c| c.own.null_sender = NullSender::Nofrom).await;
    t.say("EHLO c").await;
    t.say("MAIL FROM:<a@b.org>").await;
    assert_eq!(t.say("RCPT TO:<mmondor@example.org>").await, "250 2.1.5 Recipient ok");
    t.db.store.close().await;
    assert_eq!(t.say("RCPT TO:<sales@example.org>").await, "451 4.3.0 Temporary local error, try again later");
    t.line("DATA").await;
    assert_eq!(t.data(b"x\r\n.\r\n").await, "451 4.3.0 Temporary local error, try again later");
    assert_eq!(t.say("MAIL FROM:<>").await, "451 4.3.0 Temporary local error, try again later");
}

#[tokio::test]
async fn box_filled_between_rcpt_and_data_is_452() {
    let mut t = setup(|_| {}).await;
    t.db.add_box("one@example.org", 1, 0, 1).await;
    t.say("EHLO c").await;
    t.say("MAIL FROM:<a@b.org>").await;
    t.say("RCPT TO:<one@example.org>").await;
    t.say("RCPT TO:<mmondor@example.org>").await;
    t.line("DATA").await;
    t.db.sql("UPDATE box SET box_mails = 1 WHERE box_address = 'one@example.org'").await;
    assert_eq!(t.data(b"x\r\n.\r\n").await, "452 4.2.2 Mailbox full");
    // All or nothing: the other box got nothing either, so the sender's retry loses nothing.
    assert_eq!(support::consistent(&t.db, "mmondor@example.org").await, common::store::Usage::default());
}

#[tokio::test]
async fn ipv6_clients_are_traced_as_ipv6_literals() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let mut t = T { s: session(&config(&db.url), "2001:db8::7"), db };
    assert!(t.say("HELO v6.test").await.ends_with("Hello v6.test [2001:db8::7]"));
    t.say("MAIL FROM:<a@b.org>").await;
    t.say("RCPT TO:<mmondor@example.org>").await;
    t.line("DATA").await;
    assert!(t.data(b"x\r\n.\r\n").await.starts_with("250 "));
    let m = support::messages(&t.db, "mmondor@example.org").await;
    let text = String::from_utf8_lossy(&m[0]);
    assert!(text.contains("Received: from v6.test (unknown [IPv6:2001:db8::7])\r\n"), "{text}");
    assert!(text.contains(" with SMTP\r\n"), "HELO means plain SMTP: {text}");
}
