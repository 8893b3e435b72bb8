//! Process-level hardening of a real mmsmtpd, run as root (CI runs as root; elsewhere
//! these tests are skipped): privilege drop on a port below 1024, chroot, the instance
//! lock and pid file, and SIGHUP reloading the certificate.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use std::path::Path;
use std::time::Duration;

use common::testing::{Backend, Daemon, TestCert, TestDb};
use support::{Client, NAME, Smtp, deliver, seed};

fn root() -> bool {
    let is_root = nix::unistd::geteuid().is_root();
    if !is_root {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "CI must run these tests as root");
        eprintln!("note: not root; skipping");
    }
    is_root
}

/// A free port below 1024 (root may bind those) in `range`; each test has its own range
/// so tests running in parallel do not pick the same one.
fn low_port(range: std::ops::Range<u16>) -> u16 {
    range.into_iter().find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok()).expect("a free port below 1024")
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn start(dir: &Path, url: &str, port: u16, extra: &str) -> Daemon {
    let cfg = dir.join("mmsmtpd.toml");
    std::fs::write(
        &cfg,
        format!("[server]\nname = \"{NAME}\"\n[database]\nurl = \"{url}\"\n[listen]\naddresses = [\"127.0.0.1:{port}\"]\n{extra}"),
    )
    .unwrap();
    Daemon::start_with_file(Path::new(env!("CARGO_BIN_EXE_mmsmtpd")), &cfg, port, dir.join(format!("log-{port}")))
}

#[tokio::test]
async fn drops_to_the_configured_user_and_still_serves() {
    if !root() {
        return;
    }
    let Some(db) = TestDb::create(Backend::Postgres).await else { return };
    seed(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("mmsmtpd.pid");
    let port = low_port(900..940);
    let d = start(
        dir.path(),
        &db.url,
        port,
        &format!(
            "[privileges]\nuser = \"nobody\"\ngroup = \"nogroup\"\ngroups = [\"nogroup\"]\npid_file = \"{}\"\n",
            pid_file.display()
        ),
    );
    let (uid, gid) = (
        nix::unistd::User::from_name("nobody").unwrap().unwrap().uid,
        nix::unistd::Group::from_name("nogroup").unwrap().unwrap().gid,
    );
    assert_eq!(status_field(d.pid(), "Uid"), format!("{uid} {uid} {uid} {uid}"));
    assert_eq!(status_field(d.pid(), "Gid"), format!("{gid} {gid} {gid} {gid}"));
    assert_eq!(status_field(d.pid(), "Groups"), gid.to_string());
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), format!("{}\n", d.pid()));
    assert!(d.log_text().contains("running as nobody"), "{}", d.log_text());
    assert_eq!(deliver(d.addr(), "a@b.org", &["mmondor@example.org"], "as nobody\r\n").await, 250);
    // A second instance with the same config refuses to start.
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_mmsmtpd"))
        .args(["-c", dir.path().join("mmsmtpd.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another instance is running"));
}

#[tokio::test]
async fn chroot_confines_the_daemon() {
    if !root() {
        return;
    }
    let Some(db) = TestDb::create(Backend::Postgres).await else { return };
    seed(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let jail = dir.path().join("jail");
    std::fs::create_dir(&jail).unwrap();
    let port = low_port(940..980);
    let d = start(
        dir.path(),
        &db.url,
        port,
        &format!("[privileges]\nuser = \"nobody\"\nchroot = \"{}\"\n", jail.display()),
    );
    assert_eq!(std::fs::read_link(format!("/proc/{}/root", d.pid())).unwrap(), jail);
    assert_eq!(deliver(d.addr(), "a@b.org", &["mmondor@example.org"], "from the jail\r\n").await, 250);
}

#[tokio::test]
async fn root_without_a_user_is_refused() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mmsmtpd.toml");
    std::fs::write(&cfg, format!("[server]\nname = \"{NAME}\"\n[database]\nurl = \"sqlite://{}/x.db\"\n[listen]\naddresses = [\"127.0.0.1:0\"]\n", dir.path().display())).unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_mmsmtpd")).args(["-c", cfg.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to run as root"));
}

/// SIGHUP with a new certificate: new connections present it, an established TLS
/// session keeps working; a broken config is refused and the daemon goes on.
#[tokio::test]
async fn sighup_reloads_the_certificate() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a_dir).unwrap();
    std::fs::create_dir(&b_dir).unwrap();
    let (a, b) = (TestCert::generate(&a_dir), TestCert::generate(&b_dir));
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(&a.cert, &cert).unwrap();
    std::fs::copy(&a.key, &key).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tls =
        format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n{}", cert.display(), key.display(), common::testing::ROOT_OK);
    let d = start(dir.path(), &db.url, port, &tls);

    async fn starttls(
        port: u16,
        cert: &TestCert,
    ) -> Option<Client<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>> {
        let mut c = Client::connect(([127, 0, 0, 1], port).into()).await;
        c.code().await;
        c.cmd("EHLO c").await;
        assert_eq!(c.cmd("STARTTLS").await, 220);
        cert.connector().connect("localhost".try_into().unwrap(), c.io.into_inner()).await.ok().map(Client::new)
    }
    let mut old = starttls(port, &a).await.expect("certificate A before the reload");
    assert_eq!(old.cmd("EHLO c").await, 250);
    std::fs::copy(&b.cert, &cert).unwrap();
    std::fs::copy(&b.key, &key).unwrap();
    d.signal("HUP");
    let mut reloaded = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if d.log_text().contains("configuration reloaded") {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "{}", d.log_text());
    let mut new = starttls(port, &b).await.expect("new connections present certificate B");
    assert_eq!(new.cmd("EHLO c").await, 250);
    assert!(starttls(port, &a).await.is_none(), "certificate A is gone");
    assert_eq!(old.cmd("NOOP").await, 250, "the old session keeps working");
    // A broken config is refused; the daemon goes on with the running one.
    std::fs::write(dir.path().join("mmsmtpd.toml"), "[server]\nname = \"broken\"\nbogus = 1\n").unwrap();
    d.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(d.log_text().contains("reload refused"), "{}", d.log_text());
    assert!(starttls(port, &b).await.is_some());
}
