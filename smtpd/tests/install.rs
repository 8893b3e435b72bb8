//! install.sh into a temporary DESTDIR: the files land with the right modes, an edited
//! config survives a reinstall (the new example goes beside it as .new), and the
//! installed binaries, run with the installed example configs pointed at a temporary
//! SQLite database and high ports, carry a message in over SMTP and out over POP3.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::testing::Daemon;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The directory holding this build's binaries, with all three present.
fn binaries() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_mmsmtpd")).parent().unwrap().to_path_buf();
    if ["mmpop3d", "mmpasswd", "mmadmin", "mmstatd", "mmstat", "mmtmtpd"].iter().any(|b| !dir.join(b).exists()) {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "pop3d", "-p", "passwd", "-p", "admin", "-p", "statd", "-p", "tmtpd", "--bins"])
            .current_dir(root())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    dir
}

fn install(destdir: &Path) {
    let out = Command::new("sh")
        .arg(root().join("install.sh"))
        .arg("--binaries")
        .arg(binaries())
        .arg("--destdir")
        .arg(destdir)
        .args(["--prefix", "/usr", "--sysconfdir", "/etc", "--localstatedir", "/var"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o7777
}

/// The installed example config, pointed at `db` and `port`, able to run here.
fn localize(installed: &Path, db: &Path, port: u16, default_addresses: &str) -> String {
    let text = std::fs::read_to_string(installed).unwrap();
    let text = text
        .replace("url = \"sqlite:///var/lib/mmmail/mmmail.db\"", &format!("url = \"sqlite://{}\"", db.display()))
        .replace(default_addresses, &format!("addresses = [\"127.0.0.1:{port}\"]"))
        .replace("user = \"mmmail\"\n", "")
        .replace("group = \"mmmail\"\n", "")
        .replace("groups = [\"mmstat\"]\n", "")
        .replace("/var/run/mmstatd/mmstatd.sock", &db.with_extension("stats.sock").display().to_string());
    assert!(text.contains(&format!("127.0.0.1:{port}")) && !text.contains("user = \"mmmail\""));
    if nix::unistd::geteuid().is_root() { text.replace("allow_root = false", "allow_root = true") } else { text }
}

#[tokio::test]
async fn install_then_round_trip_with_the_installed_files() {
    let stage = tempfile::tempdir().unwrap();
    let d = stage.path();
    install(d);
    for (path, want) in [
        ("usr/sbin/mmsmtpd", 0o755),
        ("usr/sbin/mmpop3d", 0o755),
        ("usr/bin/mmpasswd", 0o755),
        ("usr/bin/mmadmin", 0o755),
        ("usr/share/man/man8/mmadmin.8", 0o644),
        ("usr/sbin/mmstatd", 0o755),
        ("usr/sbin/mmtmtpd", 0o755),
        ("usr/share/man/man8/mmtmtpd.8", 0o644),
        ("usr/share/man/man5/mmtmtpd.toml.5", 0o644),
        ("etc/mmmail/mmtmtpd.toml", 0o640),
        ("etc/systemd/system/mmtmtpd.service", 0o644),
        ("usr/bin/mmstat", 0o755),
        ("usr/share/man/man8/mmstatd.8", 0o644),
        ("usr/share/man/man8/mmstat.8", 0o644),
        ("usr/share/man/man5/mmstatd.toml.5", 0o644),
        ("etc/mmmail/mmstatd.toml", 0o640),
        ("etc/systemd/system/mmstatd.service", 0o644),
        ("var/lib/mmstatd", 0o750),
        ("usr/share/man/man8/mmsmtpd.8", 0o644),
        ("usr/share/man/man8/mmpop3d.8", 0o644),
        ("usr/share/man/man8/mmpasswd.8", 0o644),
        ("usr/share/man/man5/mmsmtpd.toml.5", 0o644),
        ("usr/share/man/man5/mmpop3d.toml.5", 0o644),
        ("usr/share/man/man7/mmmail.7", 0o644),
        ("etc/mmmail/mmsmtpd.toml", 0o640),
        ("etc/mmmail/mmpop3d.toml", 0o640),
        ("etc/systemd/system/mmsmtpd.service", 0o644),
        ("etc/systemd/system/mmpop3d.service", 0o644),
        ("var/lib/mmmail", 0o750),
    ] {
        assert_eq!(mode(&d.join(path)), want, "{path}");
    }
    let unit = std::fs::read_to_string(d.join("etc/systemd/system/mmsmtpd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/sbin/mmsmtpd -c /etc/mmmail/mmsmtpd.toml"), "{unit}");
    assert!(unit.contains("ReadWritePaths=/var/lib/mmmail") && !unit.contains('@'), "{unit}");

    // Reinstall over a locally edited config: kept, the new example beside it.
    let conf = d.join("etc/mmmail/mmsmtpd.toml");
    let edited = std::fs::read_to_string(&conf).unwrap() + "# local edit\n";
    std::fs::write(&conf, &edited).unwrap();
    install(d);
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), edited);
    assert_eq!(
        std::fs::read_to_string(d.join("etc/mmmail/mmsmtpd.toml.new")).unwrap(),
        std::fs::read_to_string(root().join("etc/mmsmtpd.toml")).unwrap()
    );
    assert!(!d.join("etc/mmmail/mmpop3d.toml.new").exists(), "an unchanged config gets no .new");

    // The installed binaries with the installed configs.
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("mmmail.db");
    let query = work.path().join("query.sock");
    let stats_conf = std::fs::read_to_string(d.join("etc/mmmail/mmstatd.toml")).unwrap();
    let _statd = Daemon::start(&d.join("usr/sbin/mmstatd"), work.path(), |port| {
        let text = stats_conf
            .replace("/var/run/mmstatd/mmstatd.sock", &db.with_extension("stats.sock").display().to_string())
            .replace("/var/run/mmstatd/query.sock", &query.display().to_string())
            .replace("/var/lib/mmstatd", &work.path().join("state").display().to_string())
            .replace("# prometheus = \"127.0.0.1:9100\"", &format!("prometheus = \"127.0.0.1:{port}\""))
            .replace("\nuser = \"mmstat\"\n", "\n")
            .replace("\ngroup = \"mmstat\"\n", "\n");
        assert!(text.contains(&format!("127.0.0.1:{port}")) && !text.contains("\nuser ="), "{text}");
        if nix::unistd::geteuid().is_root() { text.replace("allow_root = false", "allow_root = true") } else { text }
    });
    let smtp = Daemon::start(&d.join("usr/sbin/mmsmtpd"), work.path(), |port| {
        localize(&d.join("etc/mmmail/mmsmtpd.toml"), &db, port, "addresses = [\"0.0.0.0:25\", \"[::]:25\"]")
    });
    let pop = Daemon::start(&d.join("usr/sbin/mmpop3d"), work.path(), |port| {
        localize(&d.join("etc/mmmail/mmpop3d.toml"), &db, port, "addresses = [\"0.0.0.0:110\", \"[::]:110\"]")
    });
    let mut child = Command::new(d.join("usr/bin/mmpasswd"))
        .arg("--stdin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"installed\n").unwrap();
    let hash = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap().trim().to_owned();
    let store = common::Store::connect(&common::config::DatabaseConfig::from_url(format!("sqlite://{}", db.display())))
        .await
        .unwrap();
    store
        .execute_admin_sql(&format!(
            "insert into \"user\" (user_name,user_passwd,user_created) values('inst','{hash}',CURRENT_TIMESTAMP);
             insert into box values('inst@example.org',1,0,0,0,0,CURRENT_TIMESTAMP,NULL,NULL);"
        ))
        .await
        .unwrap();
    assert_eq!(
        support::deliver(
            smtp.addr(),
            "a@origin.test",
            &["inst@example.org"],
            "Subject: installed\r\n\r\nround trip\r\n"
        )
        .await,
        250
    );

    let tcp = tokio::net::TcpStream::connect(pop.addr()).await.unwrap();
    let mut c = BufReader::new(tcp);
    let mut line = String::new();
    let mut say = async |c: &mut BufReader<tokio::net::TcpStream>, cmd: &str| {
        if !cmd.is_empty() {
            c.get_mut().write_all(format!("{cmd}\r\n").as_bytes()).await.unwrap();
        }
        line.clear();
        c.read_line(&mut line).await.unwrap();
        line.clone()
    };
    assert!(say(&mut c, "").await.starts_with("+OK"));
    assert!(say(&mut c, "USER inst.example.org").await.starts_with("+OK"));
    assert!(say(&mut c, "PASS installed").await.starts_with("+OK 1 messages"));
    assert!(say(&mut c, "RETR 1").await.starts_with("+OK"));
    let mut body = String::new();
    loop {
        let l = say(&mut c, "").await;
        if l == ".\r\n" {
            break;
        }
        body.push_str(&l);
    }
    assert!(body.ends_with("Subject: installed\r\n\r\nround trip\r\n"), "{body}");
    assert!(say(&mut c, "DELE 1").await.starts_with("+OK"));
    assert!(say(&mut c, "QUIT").await.starts_with("+OK"));

    // The installed mmstat sees what the installed daemons counted.
    let mut shown = String::new();
    for _ in 0..100 {
        let out = Command::new(d.join("usr/bin/mmstat"))
            .arg("-q")
            .arg(&query)
            .args(["show", "*|mailbox|*"])
            .output()
            .unwrap();
        shown = String::from_utf8_lossy(&out.stdout).into_owned();
        if shown.contains("mmpop3d|mailbox|inst@example.org|messages-deleted") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(shown.contains("  1  mmsmtpd|mailbox|inst@example.org|messages-in\n"), "{shown}");
    assert!(shown.contains("  1  mmpop3d|mailbox|inst@example.org|messages-deleted\n"), "{shown}");
}
