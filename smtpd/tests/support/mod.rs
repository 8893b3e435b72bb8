//! Helpers shared by the smtpd integration tests.
#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::config::{DatabaseConfig, LimitsConfig, ListenConfig, LogConfig, ServerConfig, TlsConfig};
use common::net::listener::Listener;
use common::shutdown::Shutdown;
use common::testing::TestDb;
use smtpd::config::{Config, SmtpdConfig};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub const NAME: &str = "mx.example.org";

/// A config for `url` with defaults; tests adjust fields.
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
        smtpd: SmtpdConfig { flood_messages: 0, ..SmtpdConfig::default() },
    }
}

pub fn tls_config(cert: &common::testing::TestCert) -> TlsConfig {
    TlsConfig { cert: cert.cert.clone(), key: cert.key.clone() }
}

/// mmmail's demo rows: user 1 owns `mmondor@example.org` and `sales@example.org`;
/// `*@example.org` reaches mmondor, `sales-*@example.org` reaches sales.
pub async fn seed(db: &TestDb) -> i64 {
    let u = db.add_user("mmondor", "5ed6dfd210b419415eb054a9bee92e57").await;
    db.add_box("mmondor@example.org", u, 0, 0).await;
    db.add_box("sales@example.org", u, 0, 0).await;
    db.add_box("postmaster@example.org", u, 0, 0).await;
    db.add_alias("*@example.org", "mmondor@example.org", u).await;
    db.add_alias("sales-*@example.org", "sales@example.org", u).await;
    u
}

/// An in-process mmsmtpd on a loopback port.
pub struct Server {
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    pub server: std::sync::Arc<smtpd::Server>,
    shutdown: Shutdown,
}

impl Server {
    pub async fn start(cfg: Config) -> Server {
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = plain.local_addr().unwrap();
        let (tls, tls_addr) = if cfg.tls.is_some() {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            (vec![l], Some(a))
        } else {
            (vec![], None)
        };
        let store = common::Store::prepare(&cfg.database).await.unwrap();
        let shutdown = Shutdown::new();
        let mut listeners = vec![Listener { socket: plain, implicit_tls: false }];
        listeners.extend(tls.into_iter().map(|socket| Listener { socket, implicit_tls: true }));
        let server = smtpd::Server::new(&cfg, store).unwrap();
        tokio::spawn(server.clone().serve(listeners, shutdown.clone()));
        Server { addr, tls_addr, server, shutdown }
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

/// A line-level SMTP client over any stream.
pub struct Client<S> {
    pub io: BufReader<S>,
}

impl Client<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> Self {
        Client { io: BufReader::new(TcpStream::connect(addr).await.unwrap()) }
    }

    /// Connects from a chosen loopback source address (any of 127.0.0.0/8 works).
    pub async fn connect_from(addr: SocketAddr, source: std::net::Ipv4Addr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        Client { io: BufReader::new(socket.connect(addr).await.unwrap()) }
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

    /// Reads one (possibly multi-line) reply: code and the text lines joined by `\n`.
    /// `None` at end of stream.
    pub async fn reply(&mut self) -> Option<(u16, String)> {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(20), self.io.read_line(&mut line))
                .await
                .expect("reply timeout")
                .ok()?;
            if n == 0 {
                return None;
            }
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let code: u16 = line[..3].parse().unwrap_or_else(|_| panic!("bad reply {line:?}"));
            text.push(line[4..line.len() - 2].to_string());
            if line.as_bytes()[3] == b' ' {
                return Some((code, text.join("\n")));
            }
        }
    }

    pub async fn code(&mut self) -> u16 {
        self.reply().await.expect("connection closed").0
    }

    /// Sends `line` + CRLF and returns the reply code.
    pub async fn cmd(&mut self, line: &str) -> u16 {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.code().await
    }

    /// Sends `line` + CRLF and returns the full reply.
    pub async fn cmd_reply(&mut self, line: &str) -> (u16, String) {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await.expect("connection closed")
    }

    /// Whether the server closed the connection (EOF within 5 s).
    pub async fn closed(&mut self) -> bool {
        let mut buf = String::new();
        matches!(tokio::time::timeout(Duration::from_secs(5), self.io.read_line(&mut buf)).await, Ok(Ok(0)))
    }
}

/// Delivers one message over a fresh connection; returns the final reply code.
pub async fn deliver(addr: SocketAddr, from: &str, rcpts: &[&str], body: &str) -> u16 {
    let mut c = Client::connect(addr).await;
    assert_eq!(c.code().await, 220);
    assert_eq!(c.cmd("EHLO client.test").await, 250);
    if c.cmd(&format!("MAIL FROM:<{from}>")).await != 250 {
        return 0;
    }
    let mut ok = 0;
    for r in rcpts {
        if c.cmd(&format!("RCPT TO:<{r}>")).await == 250 {
            ok += 1;
        }
    }
    if ok == 0 {
        return 0;
    }
    assert_eq!(c.cmd("DATA").await, 354);
    c.send(body.as_bytes()).await;
    c.send(b".\r\n").await;
    let code = c.code().await;
    c.cmd("QUIT").await;
    code
}

pub use common::testing::{Daemon, ROOT_OK};

/// Starts a real mmsmtpd on `url` with `extra` TOML sections appended.
pub fn smtpd_daemon(dir: &Path, url: &str, extra: &str) -> Daemon {
    Daemon::start(Path::new(env!("CARGO_BIN_EXE_mmsmtpd")), dir, |port| {
        format!(
            "[server]\nname = \"{NAME}\"\n[database]\nurl = \"{url}\"\n[listen]\naddresses = [\"127.0.0.1:{port}\"]\n{extra}\n{ROOT_OK}"
        )
    })
}

/// Stored messages of a box, as retrieved (trace + body).
pub async fn messages(db: &TestDb, box_address: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for m in db.store.maildrop(box_address).await.unwrap() {
        out.push(db.store.retrieve(box_address, m.id).await.unwrap().unwrap().to_vec());
    }
    out
}

/// Asserts the box counters equal a recount of its rows; returns them.
pub async fn consistent(db: &TestDb, box_address: &str) -> common::store::Usage {
    let counters = db.counters(box_address).await;
    assert_eq!(counters, db.store.recount(box_address).await.unwrap(), "{box_address} on {:?}", db.backend);
    counters
}
