//! Real clients against real processes: mail goes in through a real mmsmtpd and comes
//! out of a real mmpop3d to Python's poplib and curl; two mmpop3d processes share one
//! PostgreSQL maildrop lock. Under `CI=true` a missing tool fails the test.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use common::store::Usage;
use std::process::{Command, Stdio};

use common::testing::{Backend, TestCert, TestDb, have};
use support::{Client, PASSWORD, Pop3, pop3d_daemon, seed, smtpd_daemon};

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Sends through mmsmtpd with smtplib, then fetches with poplib over STLS: USER/PASS,
/// UIDL, TOP, RETR, DELE, QUIT. The message must come back byte-identical after the
/// trace fields mmsmtpd adds.
const ROUND_TRIP: &str = r#"
import poplib, smtplib, ssl, sys
smtp_port, pop_port, cafile, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
sent = (b"From: a@origin.test\r\nTo: mmondor@example.org\r\nSubject: round trip\r\n\r\n"
        b".a line starting with a dot\r\n\xc3\xa9 8-bit text\r\n..two dots\r\nlast line\r\n")
s = smtplib.SMTP("127.0.0.1", smtp_port, local_hostname="py.test")
s.sendmail("a@origin.test", ["mmondor@example.org"], sent)
s.quit()
p = poplib.POP3("127.0.0.1", pop_port, timeout=20)
caps = p.capa()
assert "STLS" in caps and "UIDL" in caps and "TOP" in caps, caps
p.stls(context=ssl.create_default_context(cafile=cafile))
p.user("mmondor@example.org")
p.pass_(password)
count, size = p.stat()
assert count == 1, count
uid = p.uidl(1).split()[2]
assert len(uid) == 32, uid
resp, lines, octets = p.retr(1)
got = b"\r\n".join(lines) + b"\r\n"
assert octets == size, (octets, size)
head, sep, rest = got.partition(b"From: a@origin.test")
assert rest and sep + rest == sent, got
trace = head.decode().split("\r\n")
assert trace[0] == "Return-Path: <a@origin.test>", trace
assert trace[1].startswith("Received: from py.test"), trace
resp, top, _ = p.top(1, 1)
assert top[-1] == b"..a line starting with a dot"[1:], top[-3:]
assert p.dele(1).startswith(b"+OK")
assert b"1 messages deleted" in p.quit()
print("ROUND TRIP OK")
"#;

#[tokio::test]
async fn poplib_fetches_what_smtplib_sent_through_mmsmtpd() {
    if !have("python3") {
        return;
    }
    for db in TestDb::all().await {
        seed(&db).await;
        let dir = tempfile::tempdir().unwrap();
        let cert = TestCert::generate(dir.path());
        let smtp = smtpd_daemon(dir.path(), &db.url);
        let tls = format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.cert.display(), cert.key.display());
        let pop = pop3d_daemon(dir.path(), &db.url, &tls);
        let (ok, out) = run(Command::new("python3")
            .args(["-c", ROUND_TRIP, &smtp.port.to_string(), &pop.port.to_string()])
            .arg(&cert.cert)
            .arg(PASSWORD));
        assert!(ok && out.contains("ROUND TRIP OK"), "{:?}: {out}\n{}", db.backend, pop.log_text());
        let counters = db.counters("mmondor@example.org").await;
        assert_eq!(counters, Usage::default(), "{:?}", db.backend);
        assert_eq!(db.store.recount("mmondor@example.org").await.unwrap(), Usage::default());
    }
}

#[tokio::test]
async fn curl_lists_and_retrieves_over_pop3_and_pop3s() {
    if !have("curl") || !have("swaks") {
        return;
    }
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate(dir.path());
    let smtp = smtpd_daemon(dir.path(), &db.url);
    let (ok, out) = run(Command::new("swaks")
        .args([
            "--server",
            &format!("127.0.0.1:{}", smtp.port),
            "--to",
            "mmondor@example.org",
            "--from",
            "c@origin.test",
        ])
        .args(["--header", "Subject: for curl", "--body", "fetched by curl"]));
    assert!(ok, "{out}");
    let pop = Daemon2::start(dir.path(), &db.url, &cert);
    let user = format!("mmondor.example.org:{PASSWORD}");
    let (ok, list) = run(Command::new("curl").args([
        "-sS",
        "--max-time",
        "20",
        "-u",
        &user,
        &format!("pop3://127.0.0.1:{}/", pop.plain),
    ]));
    assert!(ok, "{list}");
    let size: usize = list.trim().strip_prefix("1 ").unwrap_or_else(|| panic!("{list:?}")).parse().unwrap();
    let (ok, msg) = run(Command::new("curl")
        .args(["-sS", "--max-time", "20", "-u", &user, "--cacert"])
        .arg(&cert.cert)
        .arg(format!("pop3s://localhost:{}/1", pop.implicit)));
    assert!(ok, "{msg}");
    assert_eq!(msg.len(), size, "RETR over POP3S returns the LIST size");
    assert!(msg.starts_with("Return-Path: <c@origin.test>\r\n"), "{msg}");
    assert!(msg.contains("Subject: for curl\r\n") && msg.contains("fetched by curl"), "{msg}");
    let (ok, msg) = run(Command::new("curl")
        .args(["-sS", "--max-time", "20", "-u", &user, "--ssl-reqd", "--cacert"])
        .arg(&cert.cert)
        .arg(format!("pop3://localhost:{}/1", pop.plain)));
    assert!(ok && msg.len() == size, "STLS: {msg}");
}

/// mmpop3d with a plain and an implicit-TLS listener.
struct Daemon2 {
    _d: common::testing::Daemon,
    plain: u16,
    implicit: u16,
}

impl Daemon2 {
    fn start(dir: &std::path::Path, url: &str, cert: &TestCert) -> Daemon2 {
        let tls_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let extra = format!(
            "tls_addresses = [\"127.0.0.1:{tls_port}\"]\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.cert.display(),
            cert.key.display()
        );
        // tls_addresses belongs to [listen], which pop3d_daemon writes last before `extra`.
        let d = pop3d_daemon(dir, url, &extra);
        let plain = d.port;
        Daemon2 { _d: d, plain, implicit: tls_port }
    }
}

/// Two mmpop3d processes on one PostgreSQL: the maildrop lock holds across processes.
#[tokio::test]
async fn lock_holds_across_processes_on_postgres() {
    let Some(db) = TestDb::create(Backend::Postgres).await else { return };
    seed(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let one = pop3d_daemon(dir.path(), &db.url, "");
    let two = pop3d_daemon(dir.path(), &db.url, "");
    let mut a = Client::connect(one.addr()).await;
    a.line().await;
    assert!(a.login("mmondor@example.org", PASSWORD).await.starts_with("+OK"));
    let mut b = Client::connect(two.addr()).await;
    b.line().await;
    assert_eq!(b.login("mmondor@example.org", PASSWORD).await, "-ERR [IN-USE] Mailbox already in use");
    assert!(a.cmd("QUIT").await.starts_with("+OK"));
    assert!(b.login("mmondor@example.org", PASSWORD).await.starts_with("+OK 0 messages"));
    assert!(b.cmd("QUIT").await.starts_with("+OK"));
}

#[test]
fn check_config_and_example() {
    let dir = tempfile::tempdir().unwrap();
    let example = common::testing::example_here(include_str!("../../etc/mmpop3d.toml"), dir.path(), "example.toml");
    let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_mmpop3d")).args(["--check-config", "-c"]).arg(&example));
    assert!(ok, "etc/mmpop3d.toml must be valid: {out}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nname = \"pop\"\n[database]\nurl = \"sqlite::memory:\"\n[listen]\naddresses = []\n[pop3d]\nlock_lease = 1\nbogus = 2\n").unwrap();
    let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_mmpop3d")).args(["--check-config", "-c"]).arg(&bad));
    assert!(!ok && out.contains("bogus"), "{out}");
}
