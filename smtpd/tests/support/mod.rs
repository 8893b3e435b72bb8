//! Helpers shared by the smtpd integration tests.
#![allow(dead_code, missing_docs)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use common::config::TlsConfig;
use common::testing::{Backend, TestDb};
use smtpd::config::Config;
use smtpd::proto::data::{DataReceiver, Received};
use smtpd::session::{Outcome, Session, Settings};
use tokio::io::{AsyncRead, AsyncWrite};

pub const NAME: &str = "mx.example.org";

/// A config for `url` with defaults; tests adjust fields.
pub fn config(url: &str) -> Config {
    let mut cfg = Config::new(common::testing::shared(NAME, url));
    cfg.own.flood_messages = 0;
    // No DNS from tests that do not test the checks (tests/checks.rs turns them on
    // against its own DNS server).
    cfg.extra.checks.enabled = false;
    cfg
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

/// An in-process mmsmtpd on loopback ports.
pub type Server = common::testing::Served<smtpd::Server>;

pub use common::testing::Client;

/// SMTP replies on the line client of `common::testing`.
#[allow(async_fn_in_trait)]
pub trait Smtp {
    /// Reads one (possibly multi-line) reply: code and the text lines joined by `\n`.
    /// `None` at end of stream.
    async fn reply(&mut self) -> Option<(u16, String)>;
    /// The code of the next reply.
    async fn code(&mut self) -> u16;
    /// Sends `line` + CRLF and returns the reply code.
    async fn cmd(&mut self, line: &str) -> u16;
    /// Sends `line` + CRLF and returns the full reply.
    async fn cmd_reply(&mut self, line: &str) -> (u16, String);
}

impl<S: AsyncRead + AsyncWrite + Unpin> Smtp for Client<S> {
    async fn reply(&mut self) -> Option<(u16, String)> {
        let mut text = Vec::new();
        loop {
            let line = self.line().await?;
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad reply {line:?}"));
            text.push(line.get(4..).unwrap_or_default().to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some((code, text.join("\n")));
            }
        }
    }

    async fn code(&mut self) -> u16 {
        self.reply().await.expect("connection closed").0
    }

    async fn cmd(&mut self, line: &str) -> u16 {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.code().await
    }

    async fn cmd_reply(&mut self, line: &str) -> (u16, String) {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await.expect("connection closed")
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

/// A session transcript against a fresh SQLite store (style.md P11 (b)): no sockets.
pub struct T {
    pub db: TestDb,
    pub s: Session,
}

/// A session for a client at `ip` under `cfg`.
pub fn session(cfg: &Config, ip: &str) -> Session {
    Session::new(Arc::new(Settings::from_config(cfg).unwrap()), ip.parse::<IpAddr>().unwrap(), false)
}

/// A seeded SQLite store and a session from 192.0.2.7 under the test config as `tweak`
/// leaves it.
pub async fn setup(tweak: impl FnOnce(&mut Config)) -> T {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let mut cfg = config(&db.url);
    tweak(&mut cfg);
    T { s: session(&cfg, "192.0.2.7"), db }
}

impl T {
    pub async fn line(&mut self, l: &str) -> Outcome {
        self.s.handle_line(l.as_bytes(), &self.db.store).await
    }
    /// Sends a line, expects a plain reply, returns "code text".
    pub async fn say(&mut self, l: &str) -> String {
        match self.line(l).await {
            Outcome::Reply(r) => format!("{} {}", r.code, r.lines.join("|")),
            other => panic!("{l}: unexpected {other:?}"),
        }
    }
    /// Feeds `raw` (ending in CRLF . CRLF) as the DATA of the transaction; "code text".
    pub async fn data(&mut self, raw: &[u8]) -> String {
        let mut rx = DataReceiver::new(self.s.data_limits());
        let (_, done) = rx.feed(raw);
        let received: Received = done.expect("end of data in input");
        match self.s.data_end(received, &self.db.store).await {
            Outcome::Reply(r) => format!("{} {}", r.code, r.lines.join("|")),
            other => panic!("unexpected {other:?}"),
        }
    }
}
