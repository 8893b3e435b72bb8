#![allow(clippy::unwrap_used)] // tests fail by panicking

//! Real processes: mmstatd with mmsmtpd and mmpop3d reporting to it, real clients
//! (swaks, Python's poplib), `mmstat` reading the counts; restarts and `kill -9` of
//! mmstatd; hostile datagrams; the daemons going on without mmstatd; the Prometheus
//! endpoint read by a real exposition-format parser.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::testing::{Backend, Daemon, ROOT_OK, TestDb, have, sibling_bin};

const BOX: &str = "demo@example.test";

fn mmstatd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mmstatd"))
}

/// An mmstatd whose sockets and state live in `dir`; its port is the Prometheus one.
fn start_statd(dir: &Path, extra: &str) -> Daemon {
    let d = dir.display();
    Daemon::start(&mmstatd_bin(), dir, |port| {
        format!(
            "[stats]\nsocket = \"{d}/stats.sock\"\n[statd]\nquery_socket = \"{d}/query.sock\"\ndir = \"{d}/state\"\nprometheus = \"127.0.0.1:{port}\"\n{extra}\n{ROOT_OK}"
        )
    })
}

fn stats_section(dir: &Path) -> String {
    format!("[stats]\nsocket = \"{}/stats.sock\"\n", dir.display())
}

fn mmstat(dir: &Path, args: &[&str]) -> (bool, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_mmstat")).arg("-q").arg(dir.join("query.sock")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// Every key matching `pattern` with its value, via `mmstat show --json`.
fn values(dir: &Path, pattern: &str) -> Vec<(String, i64)> {
    let (ok, out) = mmstat(dir, &["show", pattern, "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].as_str().unwrap().to_owned(), e["value"].as_i64().unwrap()))
        .collect()
}

fn value(dir: &Path, key: &str) -> Option<i64> {
    values(dir, key).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Waits up to 10 s for `key` to hold `want` (updates are asynchronous by design).
fn expect(dir: &Path, key: &str, want: Option<i64>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = value(dir, key);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{key}: want {want:?}, have {got:?}\n{}", mmstat(dir, &["show"]).1);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connections the test launcher's readiness probe opens to a daemon it starts.
const PROBE_CONNECTIONS: i64 = 1;

/// Waits until the launcher's readiness probe of a daemon that has just started under a
/// fresh mmstatd is counted as opened and closed (its updates arrive up to the stats
/// linger of 20 ms late); returns the daemon's `total|connections` by then.
fn probe_counted(dir: &Path, daemon: &str) -> i64 {
    expect(dir, &format!("{daemon}|total|connections"), Some(PROBE_CONNECTIONS));
    expect(dir, &format!("{daemon}|current|connections"), Some(0));
    PROBE_CONNECTIONS
}

fn send(dir: &Path, datagram: &[u8]) {
    let s = UnixDatagram::unbound().unwrap();
    s.send_to(datagram, dir.join("stats.sock")).unwrap();
}

fn swaks(port: u16, to: &str) -> bool {
    Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}"), "--from", "alice@example.org", "--to", to])
        .args(["--header", "Subject: counted", "--body", "one two three", "--silent", "2"])
        .status()
        .unwrap()
        .success()
}

/// Logs in with poplib, retrieves every message, deletes the first, quits; returns the
/// octets of the retrieved messages as LIST reported them.
fn poplib(port: u16, password: &str) -> Result<i64, String> {
    let script = format!(
        "import poplib,sys\np=poplib.POP3('127.0.0.1',{port})\np.user('{BOX}')\n\
         try:\n  p.pass_('{password}')\nexcept poplib.error_proto as e:\n  print('refused',e); sys.exit(3)\n\
         n=len(p.list()[1]); total=0\n\
         for i in range(1,n+1):\n  total+=int(p.list(i).split()[2]); p.retr(i)\n\
         p.dele(1); p.quit(); print(total)\n"
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() { Ok(text.parse().unwrap()) } else { Err(text + &String::from_utf8_lossy(&out.stderr)) }
}

/// Opens a plain connection, reads the greeting, sends each line and reads one reply to
/// each, then closes: a client making protocol errors.
fn raw(port: u16, lines: &[&str]) -> Vec<String> {
    raw_open(port, lines).1
}

/// As [`raw`], but the connection stays open as long as the returned stream lives.
fn raw_open(port: u16, lines: &[&str]) -> (std::net::TcpStream, Vec<String>) {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream.try_clone().unwrap();
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    let replies = lines
        .iter()
        .map(|line| {
            writer.write_all(format!("{line}\r\n").as_bytes()).unwrap();
            let mut reply = String::new();
            reader.read_line(&mut reply).unwrap();
            reply
        })
        .collect();
    (stream, replies)
}

async fn seeded_db() -> TestDb {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    let hash = common::password::hash(b"secret").unwrap();
    let user = db.add_user("demo", &hash).await;
    db.add_box(BOX, user, 0, 0).await;
    db
}

fn smtpd(dir: &Path, url: &str) -> Daemon {
    let bin = sibling_bin(&mmstatd_bin(), "mmsmtpd", "smtpd");
    let stats = stats_section(dir);
    Daemon::start(&bin, dir, |port| {
        format!(
            "[server]\nname = \"mx.example.org\"\n[database]\nurl = \"{url}\"\n[listen]\naddresses = [\"127.0.0.1:{port}\"]\n[limits]\nmax_per_address = 0\nconnection_rate = 0\nerror_delay = 0\n[smtpd]\nflood_messages = 0\n{stats}{ROOT_OK}"
        )
    })
}

fn pop3d(dir: &Path, url: &str) -> Daemon {
    let bin = sibling_bin(&mmstatd_bin(), "mmpop3d", "pop3d");
    let stats = stats_section(dir);
    Daemon::start(&bin, dir, |port| {
        format!(
            "[server]\nname = \"pop.example.org\"\n[database]\nurl = \"{url}\"\n[listen]\naddresses = [\"127.0.0.1:{port}\"]\n[limits]\nmax_per_address = 0\nconnection_rate = 0\nerror_delay = 0\n{stats}{ROOT_OK}"
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn real_daemons_report_exact_counts_and_mmstat_resets_and_deletes() {
    if !have("swaks") || !have("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _statd = start_statd(d, "");
    let db = seeded_db().await;
    let smtp = smtpd(d, &db.url);
    let pop = pop3d(d, &db.url);
    let smtp_base = probe_counted(d, "mmsmtpd");
    let pop_base = probe_counted(d, "mmpop3d");
    for _ in 0..3 {
        assert!(swaks(smtp.port, BOX));
    }
    assert!(!swaks(smtp.port, "nobody@example.test"), "unknown recipient refused");
    assert!(poplib(pop.port, "wrong").is_err());
    let octets = poplib(pop.port, "secret").unwrap();
    // Protocol errors are refusals too: counted per address and in total.
    let replies = raw(smtp.port, &["HELO client.example", "RCPT TO:<x@example.test>", "QUIT"]);
    assert!(replies[1].starts_with("503"), "{replies:?}");
    let replies = raw(pop.port, &["NOSUCH", "QUIT"]);
    assert!(replies[0].starts_with("-ERR"), "{replies:?}");
    expect(d, "mmsmtpd|failed|protocol|127.0.0.1", Some(1));
    expect(d, "mmpop3d|failed|protocol|127.0.0.1", Some(1));
    // A bare LF in a message (the mark of SMTP smuggling): refused and counted as such.
    let replies = raw(
        smtp.port,
        &[
            "HELO client.example",
            "MAIL FROM:<a@example.org>",
            &format!("RCPT TO:<{BOX}>"),
            "DATA",
            "Subject: x\nbare\r\n.",
            "QUIT",
        ],
    );
    assert!(replies[4].starts_with("554 5.5.2"), "{replies:?}");
    expect(d, "mmsmtpd|failed|bare|127.0.0.1", Some(1));
    assert_eq!(value(d, "mmsmtpd|failed|protocol|127.0.0.1"), Some(1), "not a protocol error as well");

    expect(d, "mmsmtpd|total|connections", Some(smtp_base + 6));
    expect(d, "mmsmtpd|current|connections", Some(0));
    expect(d, "mmsmtpd|total|messages-in", Some(3));
    expect(d, &format!("mmsmtpd|mailbox|{BOX}|messages-in"), Some(3));
    expect(d, "mmsmtpd|failed|address|127.0.0.1", Some(1));
    expect(d, "mmsmtpd|total|failed|address", Some(1));
    expect(d, "mmpop3d|total|connections", Some(pop_base + 3));
    expect(d, "mmpop3d|current|connections", Some(0));
    expect(d, "mmpop3d|failed|login|127.0.0.1", Some(1));
    expect(d, &format!("mmpop3d|mailbox|{BOX}|logins"), Some(1));
    expect(d, &format!("mmpop3d|mailbox|{BOX}|messages-out"), Some(3));
    expect(d, &format!("mmpop3d|mailbox|{BOX}|bytes-out"), Some(octets));
    expect(d, &format!("mmpop3d|mailbox|{BOX}|messages-deleted"), Some(1));
    // What went in is what came out: the stored copies are the retrieved octets.
    expect(d, &format!("mmsmtpd|mailbox|{BOX}|bytes-in"), Some(octets));
    assert!(values(d, "mmsmtpd|who|*").is_empty(), "who keys leave with their connections");
    assert!(values(d, "mmpop3d|who|*").is_empty());
    // A correct login while another session holds the box: counted per box.
    let held = raw_open(pop.port, &[&format!("USER {BOX}"), "PASS secret"]);
    let refused = poplib(pop.port, "secret").unwrap_err();
    assert!(refused.contains("IN-USE"), "{refused}");
    expect(d, &format!("mmpop3d|failed|inuse|{BOX}"), Some(1));
    expect(d, "mmpop3d|current|connections", Some(1));
    drop(held);
    // The held session's end is counted before the keys are deleted below, or its
    // late updates would bring some of them back.
    expect(d, "mmpop3d|current|connections", Some(0));

    // The human form: sorted, aligned columns, flag first.
    let (ok, shown) = mmstat(d, &["show", "mmsmtpd|total|*"]);
    assert!(ok);
    let lines: Vec<&str> = shown.lines().collect();
    // connections, messages-in, bytes-in, failed|address, failed|protocol, failed|bare
    assert_eq!(lines.len(), 6, "{shown}");
    let keys: Vec<&str> = lines.iter().map(|l| l.rsplit("  ").next().unwrap()).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted);
    assert!(lines.iter().all(|l| l.starts_with("P  ")), "{shown}");
    let key_column = lines[0].rfind("  ").unwrap();
    assert!(lines.iter().all(|l| l.rfind("  ") == Some(key_column)), "aligned:\n{shown}");

    // Reset and delete by pattern.
    let (ok, out) = mmstat(d, &["reset", "mmsmtpd|failed|*"]);
    assert!(ok && out.starts_with("3 key(s) reset"), "{out}");
    assert_eq!(value(d, "mmsmtpd|failed|address|127.0.0.1"), Some(0));
    assert_eq!(value(d, "mmsmtpd|total|failed|address"), Some(1), "only the pattern's keys");
    let before = values(d, "mmpop3d|*").len();
    let (ok, out) = mmstat(d, &["delete", "mmpop3d|*"]);
    assert!(ok && out.starts_with(&format!("{before} key(s) deleted")), "{out}");
    assert!(values(d, "mmpop3d|*").is_empty());
    assert_eq!(value(d, "mmsmtpd|total|messages-in"), Some(3));
    // Usage and protocol errors exit non-zero.
    assert!(!mmstat(d, &["set", "k", "notanumber"]).0);
    assert!(!mmstat(d, &["show", "two words"]).0);
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_survive_a_clean_restart_exactly_and_kill_9_loses_nothing_received() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let statd = start_statd(d, "");
    for i in 0..500 {
        send(d, format!("U P 1 t|total|x\nU V {i} t|current|y\n").as_bytes());
    }
    expect(d, "t|total|x", Some(500));
    statd.signal("TERM");
    drop(statd);
    let statd = start_statd(d, "");
    assert_eq!(value(d, "t|total|x"), Some(500));
    assert_eq!(value(d, "t|current|y"), Some((0..500).sum()), "volatile keys are the owners' to clear");
    // kill -9 right after the last update was seen applied: the journal has it.
    for _ in 0..250 {
        send(d, b"U P 2 t|total|x\n");
    }
    expect(d, "t|total|x", Some(1000));
    let pid = statd.pid();
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    drop(statd);
    let _statd = start_statd(d, "");
    assert_eq!(value(d, "t|total|x"), Some(1000));
    // A snapshot taken since (at start) plus more journal: still exact after another kill.
    send(d, b"S P 7 t|total|z\n");
    expect(d, "t|total|z", Some(7));
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_state_is_reported_and_mmstatd_starts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("state")).unwrap();
    std::fs::write(d.join("state/snapshot"), b"\x00\xffgarbage\nP 1 1 41 kept|key\nno end line").unwrap();
    std::fs::write(d.join("state/journal.0"), b"T 1 1\nU P 1 kept|key\nT 2 5\nU P 1 kept|key\n").unwrap();
    let statd = start_statd(d, "");
    assert_eq!(value(d, "kept|key"), Some(42));
    assert_eq!(value(d, "mmstatd|failed|damaged-state"), Some(1));
    let log = statd.log_text();
    assert!(log.contains("snapshot damaged") && log.contains("torn write"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_datagrams_are_dropped_whole_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let statd = start_statd(d, "");
    send(d, b"U P 1 ok\n");
    let bad: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        b"U P 1 a\nU P 1 b\nX P 1 c\n".to_vec(), // atomic: a and b must not appear
        b"U P 1 a\xff\xfe\n".to_vec(),
        b"U P 99999999999999999999999 a\n".to_vec(),
        b"U P 1 has space\n".to_vec(),
        b"\n\n\n".to_vec(),
        vec![0u8; 100],
        format!("U P 1 {}\n", "k".repeat(300)).into_bytes(),
    ];
    for b in &bad {
        send(d, b);
    }
    // Over the datagram limit (the kernel allows far bigger ones).
    send(d, &vec![b'U'; 60_000]);
    expect(d, "mmstatd|failed|malformed", Some(bad.len() as i64));
    expect(d, "mmstatd|failed|oversize", Some(1));
    assert_eq!(value(d, "a"), None);
    assert_eq!(value(d, "b"), None);
    assert_eq!(value(d, "ok"), Some(1));
    // Saturation instead of overflow.
    send(d, b"S P 9223372036854775807 big\nU P 1 big\n");
    expect(d, "big", Some(i64::MAX));
    // Query socket garbage gets an error, and mmstatd lives on. An overlong request
    // line is read to its end (up to 64 KiB) before the answer, so the whole write
    // always goes through.
    let mut q = std::os::unix::net::UnixStream::connect(d.join("query.sock")).unwrap();
    use std::io::{Read, Write};
    q.write_all(&vec![b'x'; 5000]).unwrap();
    q.write_all(b"\n").unwrap();
    let mut answer = String::new();
    q.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "-ERR request line too long\n.\n");
    send(d, b"U P 1 ok\n");
    expect(d, "ok", Some(2));
    assert!(statd.log_text().contains("datagram refused"));
}

#[tokio::test(flavor = "multi_thread")]
async fn max_keys_refuses_new_keys_but_keeps_counting_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _statd = start_statd(d, "max_keys = 3\n");
    send(d, b"U P 1 a\nU P 1 b\n");
    expect(d, "b", Some(1));
    send(d, b"U P 1 a\nU P 1 c\nU P 1 d\n");
    expect(d, "mmstatd|failed|max-keys", Some(1));
    assert_eq!(value(d, "a"), Some(1), "the refused transaction changed nothing");
    send(d, b"U P 5 a\n");
    expect(d, "a", Some(6));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarting_daemon_clears_its_volatile_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _statd = start_statd(d, "");
    let db = seeded_db().await;
    send(d, b"U V 3 mmsmtpd|who|192.0.2.9\nS V 5 mmsmtpd|current|connections\nU P 9 mmsmtpd|total|connections\n");
    expect(d, "mmsmtpd|who|192.0.2.9", Some(3));
    let _smtp = smtpd(d, &db.url);
    expect(d, "mmsmtpd|who|192.0.2.9", None);
    // The readiness probe of the test launcher made one connection.
    expect(d, "mmsmtpd|current|connections", Some(0));
    assert!(value(d, "mmsmtpd|total|connections").unwrap() >= 9, "persistent keys stay");
    let (ok, out) = mmstat(d, &["update", "x|v", "4", "V"]);
    assert!(ok && out.trim() == "4", "{out}");
    let (ok, out) = mmstat(d, &["delete-volatile"]);
    assert!(ok, "{out}");
    assert_eq!(value(d, "x|v"), None);
}

/// A burst of connections far beyond the kernel's queue of 10 datagrams, while mmstatd
/// is not reading (stopped, as when busy): the gauges come out exact and nothing is
/// dropped once it reads again (before the sender task, updates beyond that queue were
/// lost and `current|connections` drifted, once to -3).
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_connections_leaves_exact_gauges_and_drops_nothing() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let statd = start_statd(d, "");
    let db = seeded_db().await;
    let smtp = smtpd(d, &db.url);
    let before = probe_counted(d, "mmsmtpd");
    let port = smtp.port;
    let n = 400;
    statd.signal("STOP");
    // Waves of 100, under the default max_clients of 128.
    let clients: Vec<_> = (0..n)
        .map(|i| {
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(300));
            }
            std::thread::spawn(move || {
                let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
                assert!(l.starts_with("220"), "{l}");
                (&s).write_all(b"QUIT\r\n").unwrap();
                l.clear();
                r.read_line(&mut l).unwrap();
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    statd.signal("CONT");
    expect(d, "mmsmtpd|total|connections", Some(before + n));
    expect(d, "mmsmtpd|current|connections", Some(0));
    expect(d, "mmsmtpd|who|127.0.0.1", None);
    assert_eq!(value(d, "mmsmtpd|total|stats-dropped"), None, "nothing dropped");
}

/// Delivers over SMTP with a minimal client; true on 250 after DATA.
fn deliver(port: u16) -> bool {
    use std::io::{BufRead, BufReader, Write};
    let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut reply = || loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 {
            return String::new();
        }
        if l.as_bytes().get(3) != Some(&b'-') {
            return l[..3.min(l.len())].to_owned();
        }
    };
    let mut ok = reply() == "220";
    for (cmd, want) in [
        ("EHLO t\r\n", "250"),
        ("MAIL FROM:<a@example.org>\r\n", "250"),
        (&format!("RCPT TO:<{BOX}>\r\n"), "250"),
        ("DATA\r\n", "354"),
        ("Subject: x\r\n\r\nbody\r\n.\r\n", "250"),
        ("QUIT\r\n", "221"),
    ] {
        ok &= w.write_all(cmd.as_bytes()).is_ok() && reply() == want;
    }
    ok
}

#[tokio::test(flavor = "multi_thread")]
async fn daemons_keep_serving_when_mmstatd_dies_or_stops_reading() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let statd = start_statd(d, "");
    let db = seeded_db().await;
    let smtp = smtpd(d, &db.url);
    let port = smtp.port;
    let workers: Vec<_> = (0..8).map(|_| std::thread::spawn(move || (0..10).all(|_| deliver(port)))).collect();
    std::thread::sleep(Duration::from_millis(100));
    let pid = statd.pid().to_string();
    assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    for w in workers {
        assert!(w.join().unwrap(), "every delivery succeeded while mmstatd died");
    }
    drop(statd);
    // A socket nobody reads: the kernel queue fills and the daemon drops updates.
    let _ = std::fs::remove_file(d.join("stats.sock"));
    let deaf = UnixDatagram::bind(d.join("stats.sock")).unwrap();
    let workers: Vec<_> = (0..8).map(|_| std::thread::spawn(move || (0..10).all(|_| deliver(port)))).collect();
    for w in workers {
        assert!(w.join().unwrap(), "every delivery succeeded with a deaf mmstatd");
    }
    drop(deaf);
    assert_eq!(db.counters(BOX).await.messages, 160, "every message stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_endpoint_parses_with_the_reference_parser() {
    if !have("python3") {
        return;
    }
    let has_parser =
        Command::new("python3").args(["-c", "import prometheus_client.parser"]).status().is_ok_and(|s| s.success());
    if !has_parser {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "python3 prometheus_client is needed under CI");
        eprintln!("skipped: python3 prometheus_client not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let statd = start_statd(d, "");
    send(d, b"U P 3 mmsmtpd|total|connections\nU V 1 mmsmtpd|who|2001:db8::1\nS P -5 odd|\"quoted\\key\"\n");
    expect(d, "mmsmtpd|total|connections", Some(3));
    let script = format!(
        "import urllib.request\nfrom prometheus_client.parser import text_string_to_metric_families as f\n\
         r=urllib.request.urlopen('http://127.0.0.1:{}/metrics')\n\
         assert r.headers['Content-Type'].startswith('text/plain; version=0.0.4')\n\
         for fam in f(r.read().decode()):\n  for s in fam.samples:\n    print(fam.type, s.name, s.labels.get('key',''), s.labels.get('flag',''), int(s.value))\n",
        statd.port
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("gauge mmstat mmsmtpd|total|connections P 3\n"), "{text}");
    assert!(text.contains("gauge mmstat mmsmtpd|who|2001:db8::1 V 1\n"), "{text}");
    assert!(text.contains("gauge mmstat odd|\"quoted\\key\" P -5\n"), "{text}");
    assert!(text.contains("gauge mmstatd_keys   3\n"), "{text}");
    // Anything else than GET /metrics is refused politely.
    let out = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import urllib.request,urllib.error\ntry:\n  urllib.request.urlopen('http://127.0.0.1:{}/other')\nexcept urllib.error.HTTPError as e:\n  print(e.code)\n",
                statd.port
            ),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "404");
}
