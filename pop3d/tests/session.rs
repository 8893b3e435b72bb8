//! Session transcripts against a SQLite store: every command in every state.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::testing::{Backend, TestCert, TestDb};
use pop3d::config::Config;
use pop3d::session::{Outcome, Session, Settings};
use support::{NAME, PASSWORD, config, put, seed};

struct T {
    db: TestDb,
    cfg: Config,
    s: Session,
}

fn session(cfg: &Config, ip: &str) -> Session {
    Session::new(Arc::new(Settings::from_config(cfg)), ip.parse::<IpAddr>().unwrap(), false)
}

async fn setup(ip: &str, tweak: impl FnOnce(&mut Config)) -> T {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    put(&db, &["mmondor@example.org"], b"Subject: one\r\n\r\nfirst\r\n").await;
    put(&db, &["mmondor@example.org", "sales@example.org"], b"Subject: two\r\n\r\n.dotted\r\nline 2\r\nline 3\r\n")
        .await;
    let mut cfg = config(&db.url);
    tweak(&mut cfg);
    T { s: session(&cfg, ip), cfg, db }
}

/// Renders an outcome as text: status line, then any body lines, `CLOSE` for a close.
fn render(o: Outcome) -> String {
    match o {
        Outcome::Reply(r) => r.to_string().trim_end().to_owned(),
        Outcome::Lines(r, lines) => format!("{}|{}", r.to_string().trim_end(), lines.join("|")),
        Outcome::Message(r, m, len) => {
            format!(
                "{}|{}",
                r.to_string().trim_end(),
                String::from_utf8_lossy(&[&m.trace[..], &m.body[..len]].concat())
            )
        }
        Outcome::Continue => "+ ".into(),
        Outcome::StartTls(r) => format!("STLS {}", r.to_string().trim_end()),
        Outcome::Close(r) => format!("CLOSE {}", r.to_string().trim_end()),
    }
}

impl T {
    async fn say(&mut self, line: &str) -> String {
        render(self.s.handle_line(line.as_bytes(), &self.db.store).await)
    }
    async fn login(&mut self) -> String {
        assert_eq!(self.say("USER mmondor@example.org").await, "+OK Send PASS");
        self.say(&format!("PASS {PASSWORD}")).await
    }
    fn another(&self, ip: &str) -> Session {
        session(&self.cfg, ip)
    }
}

#[tokio::test]
async fn authorization_state() {
    let mut t = setup("127.0.0.1", |_| {}).await;
    assert_eq!(t.s.greeting().to_string(), format!("+OK {NAME} POP3 server ready\r\n"));
    assert_eq!(
        t.say("CAPA").await,
        "+OK Capability list follows|TOP|UIDL|RESP-CODES|AUTH-RESP-CODE|PIPELINING|USER|SASL PLAIN|IMPLEMENTATION mmpop3d-rs"
    );
    for cmd in ["STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "RSET", "TOP 1 1", "UIDL", "UIDL 1"] {
        assert_eq!(t.say(cmd).await, "-ERR Command not valid in this state", "{cmd}");
    }
    assert_eq!(t.say("PASS x").await, "-ERR Send USER first");
    assert!(t.say("APOP mmondor 1234").await.starts_with("-ERR APOP not supported"));
    assert_eq!(t.say("LAST").await, "-ERR Unknown command");
    assert_eq!(t.say("RETR one").await, "-ERR Syntax error in arguments");
    assert_eq!(t.say("USER").await, "-ERR Syntax error in arguments");
    assert_eq!(t.say("STLS").await, "-ERR STLS not available");
    assert_eq!(t.say("NOOP").await, "+OK");
    assert_eq!(t.say("QUIT").await, format!("CLOSE +OK {NAME} POP3 server signing off"));
}

#[tokio::test]
async fn login_failures_look_alike() {
    let mut t = setup("127.0.0.1", |_| {}).await;
    for (user, pass) in [
        ("mmondor@example.org", "wrong"),
        ("nobody@example.org", PASSWORD),
        ("not-an-address", PASSWORD),
        ("old@example.org", "wrong"),
    ] {
        assert_eq!(t.say(&format!("USER {user}")).await, "+OK Send PASS", "no enumeration at USER");
        assert_eq!(t.say(&format!("PASS {pass}")).await, "-ERR [AUTH] Invalid login", "{user}");
    }
    // The USER is forgotten after a failed PASS.
    assert_eq!(t.say(&format!("PASS {PASSWORD}")).await, "-ERR Send USER first");
}

#[tokio::test]
async fn login_name_conventions() {
    for name in ["mmondor@example.org", "MMondor@Example.Org", "mmondor.example.org", "mmondor%example.org"] {
        let mut t = setup("127.0.0.1", |_| {}).await;
        assert_eq!(t.say(&format!("USER {name}")).await, "+OK Send PASS");
        assert!(t.say(&format!("PASS {PASSWORD}")).await.starts_with("+OK 2 messages ("), "{name}");
    }
    let mut t = setup("127.0.0.1", |c| c.own.dot_login = false).await;
    t.say("USER mmondor.example.org").await;
    assert_eq!(t.say(&format!("PASS {PASSWORD}")).await, "-ERR [AUTH] Invalid login");
}

#[tokio::test]
async fn transaction_state() {
    let mut t = setup("127.0.0.1", |_| {}).await;
    let login = t.login().await;
    let sizes: Vec<i64> = t.db.store.maildrop("mmondor@example.org").await.unwrap().iter().map(|m| m.size).collect();
    let total: i64 = sizes.iter().sum();
    assert_eq!(login, format!("+OK 2 messages ({total} octets)"));
    assert_eq!(t.say("STAT").await, format!("+OK 2 {total}"));
    assert_eq!(t.say("LIST").await, format!("+OK 2 messages ({total} octets)|1 {}|2 {}", sizes[0], sizes[1]));
    assert_eq!(t.say("LIST 2").await, format!("+OK 2 {}", sizes[1]));
    assert_eq!(t.say("LIST 3").await, "-ERR No such message");
    assert_eq!(t.say("LIST 0").await, "-ERR No such message");
    let uidl = t.say("UIDL").await;
    let uids: Vec<&str> = uidl.split('|').skip(1).collect();
    assert_eq!(uids.len(), 2);
    assert!(uids[0].starts_with("1 ") && uids[1].starts_with("2 "));
    assert_eq!(t.say("UIDL 1").await, format!("+OK {}", uids[0]));
    let retr = t.say("RETR 2").await;
    assert_eq!(
        retr,
        format!(
            "+OK {} octets|Return-Path: <s@origin.test>\r\nX-For: mmondor@example.org\r\nSubject: two\r\n\r\n.dotted\r\nline 2\r\nline 3\r\n",
            sizes[1]
        )
    );
    assert_eq!(
        t.say("TOP 2 1").await,
        "+OK|Return-Path: <s@origin.test>\r\nX-For: mmondor@example.org\r\nSubject: two\r\n\r\n.dotted\r\n"
    );
    assert_eq!(t.say("RETR 9").await, "-ERR No such message");
    assert_eq!(t.say("DELE 1").await, "+OK Message 1 deleted");
    assert_eq!(t.say("DELE 1").await, "-ERR Message 1 already deleted");
    assert_eq!(t.say("DELE 7").await, "-ERR No such message");
    assert_eq!(t.say("RETR 1").await, "-ERR No such message");
    assert_eq!(t.say("LIST 1").await, "-ERR No such message");
    assert_eq!(t.say("STAT").await, format!("+OK 1 {}", sizes[1]));
    assert_eq!(t.say("LIST").await, format!("+OK 1 messages ({} octets)|2 {}", sizes[1], sizes[1]));
    assert_eq!(t.say("RSET").await, format!("+OK Maildrop has 2 messages ({total} octets)"));
    assert_eq!(t.say("NOOP").await, "+OK");
    for cmd in ["USER x", "PASS x", "STLS", "AUTH PLAIN", "APOP a b"] {
        assert_eq!(t.say(cmd).await, "-ERR Command not valid in this state", "{cmd}");
    }
    assert_eq!(
        t.say("CAPA").await,
        "+OK Capability list follows|TOP|UIDL|RESP-CODES|AUTH-RESP-CODE|PIPELINING|IMPLEMENTATION mmpop3d-rs"
    );
}

/// Messages are read from the database in runs (read-ahead); whatever order a client
/// retrieves them in, with deletions between, each answer is that message, whole. The
/// sizes cross the read-ahead's bounds (256 KiB, 64 messages).
#[tokio::test]
async fn retrieval_in_any_order_with_read_ahead() {
    let mut t = setup("127.0.0.1", |_| {}).await;
    let mut bodies: Vec<Vec<u8>> = vec![
        b"Subject: one\r\n\r\nfirst\r\n".to_vec(),
        b"Subject: two\r\n\r\n.dotted\r\nline 2\r\nline 3\r\n".to_vec(),
    ];
    for i in 2..90usize {
        let filler = match i {
            10 => 300 * 1024,
            20..=24 => 60 * 1024,
            _ => i * 7,
        };
        let body = format!("Subject: {i}\r\n\r\n{}\r\n", "y".repeat(filler)).into_bytes();
        put(&t.db, &["mmondor@example.org"], &body).await;
        bodies.push(body);
    }
    t.login().await;
    let want = |i: usize| {
        let trace = "Return-Path: <s@origin.test>\r\nX-For: mmondor@example.org\r\n";
        format!("{trace}{}", String::from_utf8_lossy(&bodies[i - 1]))
    };
    let retr = |r: String| r.split_once('|').unwrap().1.to_owned();
    // In order, deleting every seventh as it goes and the one after the next now and then.
    for i in 1..=60 {
        if i % 11 == 0 {
            assert_eq!(t.say(&format!("DELE {}", i + 2)).await, format!("+OK Message {} deleted", i + 2));
        }
        let got = t.say(&format!("RETR {i}")).await;
        if i % 11 == 2 && i > 11 {
            assert_eq!(got, "-ERR No such message", "{i}");
            continue;
        }
        assert_eq!(retr(got), want(i), "RETR {i}");
        if i % 7 == 0 {
            t.say(&format!("DELE {i}")).await;
        }
    }
    // Backwards, then TOP, then the rest.
    for i in (1..=30).rev().filter(|i| i % 7 != 0 && !(i % 11 == 2 && *i > 11)) {
        assert_eq!(retr(t.say(&format!("RETR {i}")).await), want(i), "RETR {i} backwards");
    }
    assert_eq!(
        t.say("TOP 5 0").await,
        "+OK|Return-Path: <s@origin.test>\r\nX-For: mmondor@example.org\r\nSubject: 4\r\n\r\n"
    );
    for i in 61..=90 {
        assert_eq!(retr(t.say(&format!("RETR {i}")).await), want(i), "RETR {i}");
    }
    assert_eq!(t.say("RETR 91").await, "-ERR No such message");
}

#[tokio::test]
async fn deletions_happen_only_at_quit() {
    let mut t = setup("127.0.0.1", |_| {}).await;
    t.login().await;
    t.say("DELE 1").await;
    t.say("DELE 2").await;
    assert_eq!(t.db.counters("mmondor@example.org").await.messages, 2, "DELE only marks");
    // A delivery during the session does not change the numbering.
    put(&t.db, &["mmondor@example.org"], b"Subject: three\r\n\r\nlate\r\n").await;
    assert_eq!(t.say("LIST 3").await, "-ERR No such message");
    assert_eq!(t.say("QUIT").await, format!("CLOSE +OK {NAME} POP3 server signing off (2 messages deleted)"));
    let left = t.db.store.maildrop("mmondor@example.org").await.unwrap();
    assert_eq!(left.len(), 1, "the late message stays");
    let counters = t.db.counters("mmondor@example.org").await;
    assert_eq!(counters, t.db.store.recount("mmondor@example.org").await.unwrap());
    assert_eq!(counters.messages, 1);
    // The shared body still serves the sales box.
    assert_eq!(t.db.store.maildrop("sales@example.org").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_session_ending_without_quit_deletes_nothing_and_frees_the_box() {
    let mut t = setup("127.0.0.1", |_| {}).await;
    t.login().await;
    t.say("DELE 1").await;
    let mut second = t.another("127.0.0.1");
    second.handle_line(b"USER mmondor@example.org", &t.db.store).await;
    let r = render(second.handle_line(format!("PASS {PASSWORD}").as_bytes(), &t.db.store).await);
    assert_eq!(r, "-ERR [IN-USE] Mailbox already in use");
    // A wrong password on a locked box says nothing about the lock.
    second.handle_line(b"USER mmondor@example.org", &t.db.store).await;
    assert_eq!(render(second.handle_line(b"PASS wrong", &t.db.store).await), "-ERR [AUTH] Invalid login");
    drop(t.s); // connection lost
    assert_eq!(t.db.counters("mmondor@example.org").await.messages, 2);
    let mut ok = false;
    for _ in 0..50 {
        second.handle_line(b"USER mmondor@example.org", &t.db.store).await;
        let r = render(second.handle_line(format!("PASS {PASSWORD}").as_bytes(), &t.db.store).await);
        if r.starts_with("+OK 2 messages") {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok, "the lock is released when a session ends");
}

#[tokio::test]
async fn legacy_passwords_are_rehashed() {
    let mut t = setup("127.0.0.1", |_| {}).await;
    t.say("USER old@example.org").await;
    assert!(t.say(&format!("PASS {PASSWORD}")).await.starts_with("+OK 0 messages"));
    let stored = t.db.store.user_password("legacy").await.unwrap().unwrap().passwd;
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert_eq!(common::password::verify(PASSWORD.as_bytes(), &stored), common::password::Verified::Yes);

    let mut t = setup("127.0.0.1", |c| c.own.rehash_legacy = false).await;
    t.say("USER old@example.org").await;
    assert!(t.say(&format!("PASS {PASSWORD}")).await.starts_with("+OK"));
    assert_eq!(t.db.store.user_password("legacy").await.unwrap().unwrap().passwd.len(), 32);
}

#[tokio::test]
async fn plaintext_needs_tls_off_loopback() {
    let mut t = setup("192.0.2.9", |_| {}).await;
    assert_eq!(t.say("USER mmondor@example.org").await, "-ERR [AUTH] TLS required; use STLS or POP3S");
    assert_eq!(t.say("AUTH PLAIN").await, "-ERR [AUTH] TLS required; use STLS or POP3S");
    assert!(!t.say("CAPA").await.contains("USER"));
    let mut open = setup("192.0.2.9", |c| c.own.allow_plaintext_auth = true).await;
    assert!(open.login().await.starts_with("+OK 2 messages"));
}

#[tokio::test]
async fn stls_resets_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate(dir.path());
    let mut t = setup("192.0.2.9", |c| c.tls = Some(support::tls_config(&cert))).await;
    assert!(t.say("CAPA").await.contains("|STLS|"));
    assert_eq!(t.say("STLS").await, "STLS +OK Begin TLS negotiation");
    t.s.tls_started();
    assert!(!t.say("CAPA").await.contains("STLS"));
    assert_eq!(t.say("STLS").await, "-ERR Already using TLS");
    assert!(t.login().await.starts_with("+OK 2 messages"), "plaintext is fine under TLS");
}

#[tokio::test]
async fn auth_plain() {
    let mut t = setup("127.0.0.1", |_| {}).await;
    assert_eq!(t.say("AUTH").await, "+OK Supported SASL mechanisms|PLAIN");
    assert_eq!(t.say("AUTH CRAM-MD5").await, "-ERR Unsupported SASL mechanism");
    assert_eq!(t.say("AUTH PLAIN").await, "+ ");
    assert_eq!(t.say("*").await, "-ERR Authentication cancelled");
    assert_eq!(t.say("AUTH PLAIN").await, "+ ");
    assert_eq!(t.say("!!!not base64!!!").await, "-ERR [AUTH] Invalid base64 in AUTH response");
    assert_eq!(t.say("AUTH PLAIN =").await, "-ERR [AUTH] Malformed PLAIN response");
    let no_nul = B64.encode("mmondor@example.org");
    assert_eq!(t.say(&format!("AUTH PLAIN {no_nul}")).await, "-ERR [AUTH] Malformed PLAIN response");
    let other = B64.encode(format!("sales@example.org\0mmondor@example.org\0{PASSWORD}"));
    assert_eq!(t.say(&format!("AUTH PLAIN {other}")).await, "-ERR [AUTH] Invalid login");
    let wrong = B64.encode("\0mmondor@example.org\0nope");
    assert_eq!(t.say(&format!("AUTH PLAIN {wrong}")).await, "-ERR [AUTH] Invalid login");
    // A continuation line is never taken as a command.
    assert_eq!(t.say("AUTH PLAIN").await, "+ ");
    assert_eq!(t.say("QUIT").await, "-ERR [AUTH] Malformed PLAIN response");
    let good = B64.encode(format!("mmondor@example.org\0mmondor@example.org\0{PASSWORD}"));
    assert_eq!(t.say("AUTH PLAIN").await, "+ ");
    assert!(t.say(&good).await.starts_with("+OK 2 messages"));
    let mut t2 = setup("127.0.0.1", |_| {}).await;
    let good = B64.encode(format!("\0mmondor.example.org\0{PASSWORD}"));
    assert!(t2.say(&format!("AUTH PLAIN {good}")).await.starts_with("+OK 2 messages"));
}

#[tokio::test]
async fn error_limit_closes_without_update() {
    let mut t = setup("127.0.0.1", |c| c.limits.max_errors = 3).await;
    t.login().await;
    t.say("DELE 1").await;
    assert_eq!(t.say("BOGUS").await, "-ERR Unknown command");
    assert_eq!(t.say("RETR 99").await, "-ERR No such message");
    assert_eq!(t.say("BOGUS").await, "CLOSE -ERR Too many errors, closing connection");
    drop(t.s);
    assert_eq!(t.db.counters("mmondor@example.org").await.messages, 2);
}

#[tokio::test]
async fn database_failure_is_sys_temp() {
    let mut t = setup("127.0.0.1", |_| {}).await;
    t.say("USER mmondor@example.org").await;
    t.db.store.close().await;
    assert_eq!(t.say(&format!("PASS {PASSWORD}")).await, "-ERR [SYS/TEMP] Temporary failure, try later");
}

#[tokio::test]
async fn failed_commit_at_quit_is_reported() {
    let mut t = setup("127.0.0.1", |_| {}).await;
    t.login().await;
    t.say("DELE 1").await;
    t.db.store.close().await;
    assert_eq!(t.say("QUIT").await, "CLOSE -ERR [SYS/TEMP] Some deleted messages not removed");
}

#[tokio::test]
async fn a_lost_lock_ends_the_session_without_update() {
    let mut t = setup("127.0.0.1", |c| c.own.lock_lease = 3).await;
    t.login().await;
    assert_eq!(t.say("DELE 1").await, "+OK Message 1 deleted");
    // Another session took the lease over (as after an outage longer than the lease).
    t.db.sql("UPDATE pop3_lock SET lock_owner = 'someone else'").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await; // renewal every lease/3
    assert_eq!(t.say("QUIT").await, "CLOSE -ERR [SYS/TEMP] Maildrop lock lost, closing connection");
    assert_eq!(t.db.counters("mmondor@example.org").await.messages, 2, "nothing deleted");
}
