//! Helpers shared by the pop3d integration tests.
#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::config::{DatabaseConfig, LimitsConfig, ListenConfig, LogConfig, ServerConfig, TlsConfig};
use common::net::listener::Listener;
use common::shutdown::Shutdown;
use common::store::{Delivery, MailCopy};
use common::testing::{Daemon, ROOT_OK, TestCert, TestDb};
use pop3d::config::{Config, Pop3dConfig};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub const NAME: &str = "pop.example.org";
/// The password of user "mmondor" (stored as Argon2id) and "legacy" (stored as MD5).
pub const PASSWORD: &str = "s3cret pass";

pub fn config(url: &str) -> Config {
    Config {
        server: ServerConfig { name: NAME.into() },
        database: DatabaseConfig::from_url(url),
        listen: ListenConfig::default(),
        tls: None,
        limits: LimitsConfig::unlimited(),
        shaping: Default::default(),
        privileges: Default::default(),
        log: LogConfig::default(),
        stats: common::stats::StatsConfig::disabled(),
        pop3d: Pop3dConfig::default(),
    }
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

pub struct Server {
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    shutdown: Shutdown,
}

impl Server {
    pub async fn start(cfg: Config) -> Server {
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = plain.local_addr().unwrap();
        let mut listeners = vec![Listener { socket: plain, implicit_tls: false }];
        let mut tls_addr = None;
        if cfg.tls.is_some() {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tls_addr = Some(l.local_addr().unwrap());
            listeners.push(Listener { socket: l, implicit_tls: true });
        }
        let store = common::Store::prepare(&cfg.database).await.unwrap();
        let shutdown = Shutdown::new();
        tokio::spawn(pop3d::run(Arc::new(cfg), store, listeners, shutdown.clone()));
        Server { addr, tls_addr, shutdown }
    }

    pub async fn stop(&self) -> bool {
        self.shutdown.drain(Duration::from_secs(10)).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.token.cancel();
    }
}

pub struct Client<S> {
    pub io: BufReader<S>,
}

impl Client<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> Self {
        Client { io: BufReader::new(TcpStream::connect(addr).await.unwrap()) }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(s: S) -> Self {
        Client { io: BufReader::new(s) }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
        self.io.get_mut().flush().await.unwrap();
    }

    /// One line without CRLF; `None` at end of stream.
    pub async fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(20), self.io.read_until(b'\n', &mut buf))
            .await
            .expect("timeout")
            .ok()?;
        if n == 0 {
            return None;
        }
        assert!(buf.ends_with(b"\r\n"), "line without CRLF: {buf:?}");
        buf.truncate(buf.len() - 2);
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Sends a command, returns its status line.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.line().await.expect("closed")
    }

    /// Reads a multi-line body up to the `.` line, undoing byte-stuffing; raw bytes.
    pub async fn body(&mut self) -> Vec<u8> {
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

    /// Sends a command expecting `+OK` and a multi-line body.
    pub async fn multi(&mut self, line: &str) -> (String, Vec<u8>) {
        let status = self.cmd(line).await;
        assert!(status.starts_with("+OK"), "{line}: {status}");
        let body = self.body().await;
        (status, body)
    }

    pub async fn login(&mut self, user: &str, pass: &str) -> String {
        let r = self.cmd(&format!("USER {user}")).await;
        assert!(r.starts_with("+OK"), "{r}");
        self.cmd(&format!("PASS {pass}")).await
    }

    pub async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(tokio::time::timeout(Duration::from_secs(5), self.io.read(&mut buf)).await, Ok(Ok(0)))
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
