#![allow(clippy::unwrap_used)] // tests fail by panicking

//! mmstatd and a reporting daemon both dropping root, as installed (CI runs as root;
//! elsewhere this is skipped): the sockets belong to the socket group with mode 0660,
//! the state directory to mmstatd's user, and the unprivileged daemon's counts reach
//! mmstatd, also after mmstatd restarted (the daemon reconnects through the group).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::testing::{Backend, Daemon, TestDb, sibling_bin};

fn root() -> bool {
    let is_root = nix::unistd::geteuid().is_root();
    if !is_root {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "CI must run these tests as root");
        eprintln!("note: not root; skipping");
    }
    is_root
}

fn status_uid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

fn statd(dir: &Path) -> Daemon {
    let d = dir.display();
    Daemon::start(Path::new(env!("CARGO_BIN_EXE_mmstatd")), dir, |port| {
        format!(
            "[stats]\nsocket = \"{d}/run/stats.sock\"\n[statd]\nquery_socket = \"{d}/run/query.sock\"\ndir = \"{d}/state\"\nprometheus = \"127.0.0.1:{port}\"\nsocket_group = \"nogroup\"\n[privileges]\nuser = \"nobody\"\ngroup = \"nogroup\"\n"
        )
    })
}

fn messages_in(dir: &Path) -> Option<i64> {
    let out = Command::new(env!("CARGO_BIN_EXE_mmstat"))
        .arg("-q")
        .arg(dir.join("run/query.sock"))
        .args(["show", "mmsmtpd|total|messages-in", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()?.first()?["value"].as_i64()
}

fn wait_for(dir: &Path, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while messages_in(dir) != Some(want) {
        assert!(Instant::now() < deadline, "messages-in: want {want}, have {:?}", messages_in(dir));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn deliver(port: u16) {
    let ok = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}"), "--from", "a@example.org", "--to", "demo@example.test"])
        .args(["--silent", "2"])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn unprivileged_daemons_report_through_the_socket_group() {
    if !root() || !common::testing::have("swaks") {
        return;
    }
    let Some(db) = TestDb::create(Backend::Postgres).await else { return };
    let user = db.add_user("demo", "x").await;
    db.add_box("demo@example.test", user, 0, 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let nogroup = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();

    let stats = statd(&dir);
    assert_eq!(status_uid(stats.pid()), nobody.uid.as_raw(), "mmstatd dropped root");
    for sock in ["run/stats.sock", "run/query.sock"] {
        let m = std::fs::metadata(dir.join(sock)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o660, "{sock}");
        assert_eq!(m.gid(), nogroup.gid.as_raw(), "{sock}");
    }
    assert_eq!(std::fs::metadata(dir.join("state")).unwrap().uid(), nobody.uid.as_raw());
    assert!(dir.join("state/snapshot").exists(), "written by the unprivileged mmstatd");

    let url = &db.url;
    let d = dir.display();
    let smtp = Daemon::start(
        &sibling_bin(Path::new(env!("CARGO_BIN_EXE_mmstatd")), "mmsmtpd", "smtpd"),
        &dir,
        |port| {
            format!(
                "[server]\nname = \"mx.example.org\"\n[database]\nurl = \"{url}\"\n[listen]\naddresses = [\"127.0.0.1:{port}\"]\n[stats]\nsocket = \"{d}/run/stats.sock\"\n[privileges]\nuser = \"nobody\"\ngroup = \"nogroup\"\n"
            )
        },
    );
    assert_eq!(status_uid(smtp.pid()), nobody.uid.as_raw(), "mmsmtpd dropped root");
    deliver(smtp.port);
    wait_for(&dir, 1);

    // mmstatd restarts (a new socket): the unprivileged mmsmtpd reconnects on its own.
    stats.signal("TERM");
    drop(stats);
    let _stats = statd(&dir);
    wait_for(&dir, 1);
    // Reconnection is tried at most once a second; counts of deliveries before it are
    // dropped (never the mail), so deliver until one is counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        deliver(smtp.port);
        std::thread::sleep(Duration::from_millis(300));
        if messages_in(&dir).is_some_and(|v| v > 1) {
            break;
        }
        assert!(Instant::now() < deadline, "no count after the restart: {:?}", messages_in(&dir));
    }
}
