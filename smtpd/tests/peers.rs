//! Real peers from Debian: Postfix relaying into mmsmtpd (over STARTTLS, pipelined;
//! Postfix's SMTP client never sends BDAT, its CHUNKING support is its server's), and
//! HAProxy with `send-proxy-v2` in front of
//! mmsmtpd (mmpop3d's test is beside it). Each runs from its own configuration on free
//! loopback ports, started and stopped by the test; the system's instances are never
//! touched. Postfix's master must run as root.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::testing::{Backend, Haproxy, TestCert, TestDb, free_port, have};
use support::{Client, Server, Smtp, config, messages, seed};

/// Whether the process may run Postfix's master (root); a failure under `CI=true`.
fn root() -> bool {
    let ok = nix::unistd::geteuid().is_root();
    if !ok {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "the Postfix test needs root under CI=true");
        eprintln!("note: not root; skipping the Postfix test");
    }
    ok
}

/// A Postfix instance of its own: `smtpd` on `port`, relaying everything from loopback
/// to `[127.0.0.1]:relay_port` with TLS required. Stopped when dropped.
struct Postfix {
    conf: PathBuf,
    maillog: PathBuf,
    port: u16,
}

impl Postfix {
    fn start(dir: &Path, relay_port: u16) -> Postfix {
        let conf = dir.join("conf");
        let queue = dir.join("queue");
        let data = dir.join("data");
        for d in [&conf, &queue, &data] {
            std::fs::create_dir_all(d).unwrap();
        }
        // Postfix's own processes (user postfix) walk these paths.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (uid, _) = postfix_user();
        nix::unistd::chown(&data, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
        let port = free_port();
        let maillog = dir.join("maillog");
        std::fs::write(
            conf.join("main.cf"),
            format!(
                "compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = relay.test
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
relayhost = [127.0.0.1]:{relay_port}
smtp_tls_security_level = encrypt
smtp_tls_loglevel = 1
maillog_file = {maillog}
maillog_file_prefixes = {dir}
",
                queue = queue.display(),
                data = data.display(),
                maillog = maillog.display(),
                dir = dir.display(),
            ),
        )
        .unwrap();
        // The services a relay needs, none chrooted.
        let services = [
            format!("127.0.0.1:{port} inet n - n - - smtpd"),
            "pickup unix n - n 60 1 pickup".into(),
            "cleanup unix n - n - 0 cleanup".into(),
            "qmgr unix n - n 300 1 qmgr".into(),
            "tlsmgr unix - - n 1000? 1 tlsmgr".into(),
            "rewrite unix - - n - - trivial-rewrite".into(),
            "bounce unix - - n - 0 bounce".into(),
            "defer unix - - n - 0 bounce".into(),
            "trace unix - - n - 0 bounce".into(),
            "verify unix - - n - 1 verify".into(),
            "flush unix n - n 1000? 0 flush".into(),
            "proxymap unix - - n - - proxymap".into(),
            "smtp unix - - n - - smtp".into(),
            "relay unix - - n - - smtp".into(),
            "showq unix n - n - - showq".into(),
            "error unix - - n - - error".into(),
            "retry unix - - n - - error".into(),
            "discard unix - - n - - discard".into(),
            "anvil unix - - n - 1 anvil".into(),
            "scache unix - - n - 1 scache".into(),
            "postlog unix-dgram n - n - 1 postlogd".into(),
        ];
        std::fs::write(conf.join("master.cf"), services.join("\n") + "\n").unwrap();
        let pf = Postfix { conf, maillog, port };
        pf.postfix("start");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return pf;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("Postfix did not start: {}", pf.log());
    }

    fn postfix(&self, command: &str) {
        let out = Command::new("postfix").arg("-c").arg(&self.conf).arg(command).output().unwrap();
        assert!(out.status.success(), "postfix {command}: {}{}", String::from_utf8_lossy(&out.stderr), self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.maillog).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix").arg("-c").arg(&self.conf).arg("stop").output();
    }
}

fn postfix_user() -> (u32, u32) {
    let u = nix::unistd::User::from_name("postfix").unwrap().expect("user postfix (Debian package postfix)");
    (u.uid.as_raw(), u.gid.as_raw())
}

/// Postfix relays 200 messages into mmsmtpd: over STARTTLS, with connection reuse and
/// pipelining. Every message arrives once, intact (a dot-stuffed line included), with
/// the reverse-path as given and mmsmtpd's trace fields.
#[tokio::test(flavor = "multi_thread")]
async fn postfix_relays_into_mmsmtpd() {
    if !have("postfix") || !root() {
        return;
    }
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate(dir.path());
    // The relay is one client delivering many messages: no per-address limits here
    // (with the defaults mmsmtpd defers the surplus with 421/450, which Postfix retries
    // later, correctly but too slowly for a test).
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[limits]\nmax_per_address = 0\nconnection_rate = 0\n[smtpd]\nflood_messages = 0\n",
        cert.cert.display(),
        cert.key.display()
    );
    let mm = support::smtpd_daemon(dir.path(), &db.url, &tls);
    let pf_dir = dir.path().join("postfix");
    let pf = {
        let (d, port) = (pf_dir.clone(), mm.port);
        tokio::task::spawn_blocking(move || Postfix::start(&d, port)).await.unwrap()
    };

    let mut c = Client::connect(std::net::SocketAddr::from(([127, 0, 0, 1], pf.port))).await;
    assert_eq!(c.code().await, 220);
    assert_eq!(c.cmd("EHLO sender.test").await, 250);
    const N: usize = 200;
    for i in 0..N {
        assert_eq!(c.cmd("MAIL FROM:<Sender@Origin.Test>").await, 250);
        assert_eq!(c.cmd(&format!("RCPT TO:<member{i}@example.org>")).await, 250);
        assert_eq!(c.cmd("DATA").await, 354);
        c.send(format!("Subject: relayed {i}\r\n\r\nmessage {i}\r\n..leading dot\r\n.\r\n").as_bytes()).await;
        assert_eq!(c.code().await, 250, "message {i}");
    }
    assert_eq!(c.cmd("QUIT").await, 221);

    let mut stored = Vec::new();
    for _ in 0..600 {
        stored = messages(&db, "mmondor@example.org").await;
        if stored.len() >= N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored.len(), N, "relayed: {}\n{}", stored.len(), pf.log());
    let mut subjects: Vec<usize> = stored
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(m);
            assert!(text.starts_with("Return-Path: <Sender@Origin.Test>\r\nReceived: from relay.test"), "{text}");
            assert!(text.contains("with ESMTPS"), "{text}");
            assert!(text.contains("\r\n.leading dot\r\n"), "{text}");
            text.split("Subject: relayed ").nth(1).unwrap().split('\r').next().unwrap().parse().unwrap()
        })
        .collect();
    subjects.sort_unstable();
    assert_eq!(subjects, (0..N).collect::<Vec<_>>(), "each message once");
    let log = pf.log();
    assert!(log.contains("TLS connection established to 127.0.0.1"), "{log}");
    drop(pf);
    drop(mm);
}

/// HAProxy with `send-proxy-v2` in front of mmsmtpd: mmsmtpd sees the clients HAProxy
/// names (127.0.0.5, 127.0.0.6), not HAProxy at 127.0.0.1, in its greeting, its trace
/// fields and its per-address limit.
#[tokio::test(flavor = "multi_thread")]
async fn haproxy_send_proxy_v2_in_front_of_mmsmtpd() {
    if !have("haproxy") {
        return;
    }
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let mut cfg = config(&db.url);
    cfg.listen.proxy_networks = vec!["127.0.0.1/32".parse().unwrap()];
    cfg.limits.max_per_address = 1;
    let smtp = Server::start(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let hp = {
        let (d, routes) = (dir.path().to_path_buf(), [(port, smtp.addr)]);
        tokio::task::spawn_blocking(move || Haproxy::start(&d, &routes)).await.unwrap()
    };
    let front = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    let mut a = Client::connect_from(front, [127, 0, 0, 5].into()).await;
    assert_eq!(a.code().await, 220);
    let (_, ehlo) = a.cmd_reply("EHLO behind.haproxy").await;
    assert!(ehlo.contains("Hello behind.haproxy [127.0.0.5]"), "{ehlo}");
    assert_eq!(a.cmd("MAIL FROM:<a@b.org>").await, 250);
    assert_eq!(a.cmd("RCPT TO:<mmondor@example.org>").await, 250);
    assert_eq!(a.cmd("DATA").await, 354);
    a.send(b"Subject: via haproxy\r\n\r\nx\r\n.\r\n").await;
    assert_eq!(a.code().await, 250);
    let m = messages(&db, "mmondor@example.org").await;
    assert!(String::from_utf8_lossy(&m[0]).contains("(unknown [127.0.0.5])"), "{}", String::from_utf8_lossy(&m[0]));
    // max_per_address = 1 tells 127.0.0.5 and 127.0.0.6 apart, though both come through
    // the one HAProxy.
    let mut b = Client::connect_from(front, [127, 0, 0, 6].into()).await;
    assert_eq!(b.code().await, 220);
    let mut again = Client::connect_from(front, [127, 0, 0, 5].into()).await;
    assert_eq!(again.reply().await.unwrap().0, 421);
    assert_eq!(a.cmd("QUIT").await, 221);
    assert_eq!(b.cmd("QUIT").await, 221);
    drop(hp);
}
