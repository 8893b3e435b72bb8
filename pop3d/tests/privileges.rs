//! mmpop3d drops privileges like every daemon (the shared `common::daemon` start-up);
//! run as root (CI), skipped elsewhere.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use std::path::Path;

use common::testing::{Backend, Daemon, TestDb};
use support::{Client, PASSWORD, Pop3, put, seed};

#[tokio::test]
async fn drops_to_nobody_on_port_below_1024_and_serves() {
    if !nix::unistd::geteuid().is_root() {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "CI must run this test as root");
        return;
    }
    let Some(db) = TestDb::create(Backend::Postgres).await else { return };
    seed(&db).await;
    put(&db, &["mmondor@example.org"], b"Subject: x\r\n\r\nhi\r\n").await;
    let dir = tempfile::tempdir().unwrap();
    let port = (980..1020).find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok()).unwrap();
    let cfg = dir.path().join("mmpop3d.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nname = \"pop.example.org\"\n[database]\nurl = \"{}\"\n[listen]\naddresses = [\"127.0.0.1:{port}\"]\n[privileges]\nuser = \"nobody\"\n",
            db.url
        ),
    )
    .unwrap();
    let d = Daemon::start_with_file(Path::new(env!("CARGO_BIN_EXE_mmpop3d")), &cfg, port, dir.path().join("log"));
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let uid = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
    assert!(status.contains(&format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}")), "{status}");
    let mut c = Client::connect(d.addr()).await;
    c.line().await;
    assert!(c.login("mmondor@example.org", PASSWORD).await.starts_with("+OK 1 messages"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
}
