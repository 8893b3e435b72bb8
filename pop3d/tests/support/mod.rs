//! Helpers shared by the pop3d integration tests.
#![allow(dead_code, missing_docs)]

use std::path::Path;
use std::time::Duration;

use common::config::TlsConfig;
use common::store::{Delivery, MailCopy};
use common::testing::{Daemon, ROOT_OK, TestCert, TestDb};
use pop3d::config::Config;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite};

pub const NAME: &str = "pop.example.org";
/// The password of user "mmondor" (stored as Argon2id) and "legacy" (stored as MD5).
pub const PASSWORD: &str = "s3cret pass";

pub fn config(url: &str) -> Config {
    Config::new(common::testing::shared(NAME, url))
}

pub fn tls_config(cert: &TestCert) -> TlsConfig {
    TlsConfig { cert: cert.cert.clone(), key: cert.key.clone() }
}

/// Users "mmondor" (Argon2id) with boxes mmondor@ and sales@example.org, and "legacy"
/// (mmmail MD5) with old@example.org; both with password [`PASSWORD`].
pub async fn seed(db: &TestDb) {
    let hash = common::password::hash(PASSWORD.as_bytes()).unwrap();
    let u = db.add_user("mmondor", &hash).await;
    db.add_box("mmondor@example.org", u, 0, 0).await;
    db.add_box("sales@example.org", u, 0, 0).await;
    let l = db.add_user("legacy", &common::password::legacy_md5(PASSWORD.as_bytes())).await;
    db.add_box("old@example.org", l, 0, 0).await;
}

/// Stores `body` in `boxes` (one shared body), as mmsmtpd would; returns nothing.
pub async fn put(db: &TestDb, boxes: &[&str], body: &[u8]) {
    let copies = boxes
        .iter()
        .map(|b| MailCopy {
            box_address: (*b).into(),
            uid: common::random_hex(16),
            trace: format!("Return-Path: <s@origin.test>\r\nX-For: {b}\r\n").into_bytes(),
        })
        .collect();
    db.store.deliver(&Delivery { body, copies }).await.unwrap();
}

/// An in-process mmpop3d on loopback ports.
pub type Server = common::testing::Served<pop3d::Server>;

pub use common::testing::Client;

/// POP3 on the line client of `common::testing`.
#[allow(async_fn_in_trait)]
pub trait Pop3 {
    /// Sends a command, returns its status line.
    async fn cmd(&mut self, line: &str) -> String;
    /// Reads a multi-line body up to the `.` line, undoing byte-stuffing; raw bytes.
    async fn body(&mut self) -> Vec<u8>;
    /// Sends a command expecting `+OK` and a multi-line body.
    async fn multi(&mut self, line: &str) -> (String, Vec<u8>);
    /// USER and PASS; the reply to PASS.
    async fn login(&mut self, user: &str, pass: &str) -> String;
}

impl<S: AsyncRead + AsyncWrite + Unpin> Pop3 for Client<S> {
    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.line().await.expect("closed")
    }

    async fn body(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut buf = Vec::new();
            tokio::time::timeout(Duration::from_secs(20), self.io.read_until(b'\n', &mut buf)).await.unwrap().unwrap();
            assert!(buf.ends_with(b"\r\n"), "{buf:?}");
            if buf == b".\r\n" {
                return out;
            }
            let line = if buf.starts_with(b".") { &buf[1..] } else { &buf[..] };
            out.extend_from_slice(line);
        }
    }

    async fn multi(&mut self, line: &str) -> (String, Vec<u8>) {
        let status = self.cmd(line).await;
        assert!(status.starts_with("+OK"), "{line}: {status}");
        let body = self.body().await;
        (status, body)
    }

    async fn login(&mut self, user: &str, pass: &str) -> String {
        let r = self.cmd(&format!("USER {user}")).await;
        assert!(r.starts_with("+OK"), "{r}");
        self.cmd(&format!("PASS {pass}")).await
    }
}

/// Starts a real mmpop3d on `url` with `extra` TOML appended.
pub fn pop3d_daemon(dir: &Path, url: &str, extra: &str) -> Daemon {
    Daemon::start(Path::new(env!("CARGO_BIN_EXE_mmpop3d")), dir, |port| {
        format!(
            "[server]\nname = \"{NAME}\"\n[database]\nurl = \"{url}\"\n[listen]\naddresses = [\"127.0.0.1:{port}\"]\n{extra}\n{ROOT_OK}"
        )
    })
}

/// The mmsmtpd binary of the same build (cargo builds every workspace binary for
/// `cargo test --workspace`; built here when this package is tested alone).
pub fn mmsmtpd_bin() -> std::path::PathBuf {
    common::testing::sibling_bin(Path::new(env!("CARGO_BIN_EXE_mmpop3d")), "mmsmtpd", "smtpd")
}

/// Starts a real mmsmtpd on `url` (nofrom open, for test deliveries).
pub fn smtpd_daemon(dir: &Path, url: &str) -> Daemon {
    Daemon::start(&mmsmtpd_bin(), dir, |port| {
        format!(
            "[server]\nname = \"mx.example.org\"\n[database]\nurl = \"{url}\"\n[listen]\naddresses = [\"127.0.0.1:{port}\"]\n[smtpd]\nnull_sender = \"accept\"\n{ROOT_OK}"
        )
    })
}
