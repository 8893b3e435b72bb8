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

/// `install.sh --local` with its output on a pipe, in its own process group.
fn local_run(dir: &Path, args: &[&str]) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    Command::new("sh")
        .arg(root().join("install.sh"))
        .args(["--local", "--binaries"])
        .arg(binaries())
        .arg("--local-dir")
        .arg(dir)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap()
}

/// Everything a finished run printed.
fn finished(child: std::process::Child) -> (bool, String) {
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// Waits for the banner's last line; returns the banner.
fn banner(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        text += &line;
        text.push('\n');
        if line.starts_with("Press Ctrl-C") {
            return text;
        }
    }
    panic!("install.sh --local ended before its banner:\n{text}");
}

fn tool_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?}: {text}");
    text
}

/// The quick start as a newcomer meets it on a machine whose default port is taken: the
/// failure names the option that moves the port; the option works and is remembered; a
/// second run while one runs changes nothing; the banner's clients work against it.
#[test]
fn local_quick_start_moves_ports_refuses_a_second_run_and_serves_real_clients() {
    if !common::testing::have("openssl") || !common::testing::have("swaks") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("local");
    let [taken, smtp, pop3, pop3s, tmtp, metrics] = std::array::from_fn(|_| common::testing::free_port());
    let (pop3, pop3s, tmtp, metrics) = (pop3.to_string(), pop3s.to_string(), tmtp.to_string(), metrics.to_string());

    // The SMTP port is taken: the run fails and says how to move it.
    let holder = std::net::TcpListener::bind(("127.0.0.1", taken)).unwrap();
    let taken_arg = taken.to_string();
    let (ok, out) = finished(local_run(
        &dir,
        &[
            "--smtp-port",
            &taken_arg,
            "--pop3-port",
            &pop3,
            "--pop3s-port",
            &pop3s,
            "--tmtp-port",
            &tmtp,
            "--metrics-port",
            &metrics,
        ],
    ));
    assert!(!ok, "{out}");
    assert!(out.contains("in use") && out.contains("./install.sh --local --smtp-port N"), "{out}");
    assert!(!dir.join("var/install.pid").exists(), "a failed run cleans up after itself");
    drop(holder);

    // Moved: only the SMTP port given, the others remembered from the run before.
    let smtp_arg = smtp.to_string();
    let mut running = local_run(&dir, &["--smtp-port", &smtp_arg]);
    let shown = banner(&mut running);
    let ports = format!("ports: SMTP {smtp}, POP3 {pop3}, POP3S {pop3s}, TMTP {tmtp}, metrics {metrics}");
    assert!(shown.contains(&ports), "{shown}");
    let smtpd_conf = std::fs::read_to_string(dir.join("etc/mmsmtpd.toml")).unwrap();
    assert!(smtpd_conf.contains(&format!("127.0.0.1:{smtp}")), "{smtpd_conf}");

    // The banner's clients: swaks with and without STARTTLS, then fetchmail and mpop
    // with the configurations the run wrote, checking the local certificate.
    for i in 0..30 {
        let tls: &[&str] = if i == 0 { &["--tls"] } else { &[] };
        tool_ok(
            Command::new("swaks")
                .args(["--server", &format!("127.0.0.1:{smtp}"), "--from", "you@example.net"])
                .args(["--to", "anything@example.test", "--silent", "2"])
                .args(tls),
        );
    }
    let boxes = tool_ok(
        Command::new(binaries().join("mmadmin")).arg("-c").arg(dir.join("etc/mmsmtpd.toml")).args(["box", "list"]),
    );
    let row = boxes.lines().find(|l| l.starts_with("demo@example.test")).unwrap_or_else(|| panic!("{boxes}"));
    assert_eq!(row.split_whitespace().nth(4), Some("30"), "{boxes}");
    if common::testing::have("fetchmail") {
        let etc = dir.join("etc");
        tool_ok(Command::new("fetchmail").arg("-f").arg(etc.join("fetchmailrc")).env("HOME", tmp.path()));
        let got = std::fs::read_to_string(dir.join("var/fetchmail.out")).unwrap();
        assert_eq!(got.matches("\nSubject: ").count(), 30, "{got}");
    }
    if common::testing::have("mpop") {
        tool_ok(Command::new("mpop").arg("-C").arg(dir.join("etc/mpoprc")).arg("local").env("HOME", tmp.path()));
        let got = std::fs::read_to_string(dir.join("var/mpop.mbox")).unwrap();
        assert_eq!(got.lines().filter(|l| l.starts_with("From ")).count(), 30);
    }

    // A second run while this one runs: refused, nothing touched.
    let logs = |d: &Path| -> Vec<u64> {
        ["mmstatd", "mmsmtpd", "mmpop3d", "mmtmtpd"]
            .iter()
            .map(|n| std::fs::metadata(d.join(format!("var/{n}.log"))).unwrap().len())
            .collect()
    };
    let before = logs(&dir);
    let (ok, out) = finished(local_run(&dir, &["--smtp-port", &taken_arg]));
    assert!(!ok && out.contains("already running") && out.contains("Nothing was changed"), "{out}");
    assert_eq!(logs(&dir), before, "logs untouched");
    assert_eq!(std::fs::read_to_string(dir.join("etc/mmsmtpd.toml")).unwrap(), smtpd_conf, "config untouched");
    assert!(std::net::TcpStream::connect(("127.0.0.1", smtp)).is_ok(), "the running suite still serves");

    // Stopped, it leaves nothing running.
    assert!(Command::new("kill").arg("-TERM").arg(running.id().to_string()).status().unwrap().success());
    running.wait().unwrap();
    assert!(!dir.join("var/install.pid").exists() && !dir.join("var/mmsmtpd.pid").exists());
    assert!(std::net::TcpStream::connect(("127.0.0.1", smtp)).is_err(), "mmsmtpd stopped");
}
