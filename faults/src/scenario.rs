//! One fault scenario: a database, the three daemons on it as real processes, fixtures
//! (boxes for SMTP, filled boxes for POP3, TMTP accounts), load from recording clients,
//! and the final check of every ledger against the database.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::config::DatabaseConfig;
use common::store::{Delivery, MailCopy, Store};
use common::testing::{Backend, Daemon, TestCert};

use crate::clients::{self, SMTP_MARKER, Stop, TmtpAccount};
use crate::db::Database;
use crate::ledger::{self, Ledger, Row};

/// Boxes the SMTP clients send to (`smtp-N@fault.test`).
pub const SMTP_BOXES: usize = 4;
/// Boxes the POP3 clients read and delete from (`pop-N@fault.test`).
pub const POP3_BOXES: usize = 3;
/// Messages in each POP3 box at the start.
pub const POP3_MESSAGES: usize = 150;
/// The POP3 password of user `fault`.
pub const PASSWORD: &str = "fault-password";
/// `[pop3d] lock_lease` of the scenario's mmpop3d, seconds.
pub const LOCK_LEASE: u64 = 6;

/// The three daemons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// mmsmtpd.
    Smtp,
    /// mmpop3d.
    Pop3,
    /// mmtmtpd.
    Tmtp,
}

impl Which {
    /// All three.
    pub const ALL: [Which; 3] = [Which::Smtp, Which::Pop3, Which::Tmtp];

    /// The program name.
    pub fn program(self) -> &'static str {
        match self {
            Which::Smtp => "mmsmtpd",
            Which::Pop3 => "mmpop3d",
            Which::Tmtp => "mmtmtpd",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Which::Smtp => "smtpd",
            Which::Pop3 => "pop3d",
            Which::Tmtp => "tmtpd",
        }
    }
}

struct Running {
    daemon: Option<Daemon>,
    config: PathBuf,
    port: u16,
    restarts: u32,
}

/// A database with the three daemons running on it and the fixtures in place.
pub struct Scenario {
    /// The database (kill or fill it through this).
    pub db: Database,
    /// The test's own connection, for fixtures and checks.
    pub store: Store,
    /// Configs and logs.
    pub dir: tempfile::TempDir,
    cert: TestCert,
    daemons: HashMap<&'static str, Running>,
    logs: Vec<PathBuf>,
    pop3_uids: Vec<String>,
    tmtp_sender: (String, String),
    /// The recipient's uid and node secret.
    tmtp_recipient: (String, String),
    /// Fault label for the report.
    pub fault: String,
    /// Unix time of the last kill -9 of a daemon: its sessions' leases may live until
    /// then plus [`LOCK_LEASE`].
    killed_at: Option<i64>,
}

/// Load running against a scenario: one ledger per daemon.
pub struct Load {
    /// Set to stop every client.
    pub stop: Stop,
    /// SMTP messages, keyed by marker.
    pub smtp: Ledger,
    /// POP3 deletions, keyed by UIDL.
    pub pop3: Ledger,
    /// TMTP posts, keyed by marker.
    pub tmtp: Ledger,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// The ledger of one daemon's clients.
    pub fn ledger(&self, which: Which) -> &Ledger {
        match which {
            Which::Smtp => &self.smtp,
            Which::Pop3 => &self.pop3,
            Which::Tmtp => &self.tmtp,
        }
    }

    /// Waits until every ledger has at least `n` more acknowledgements than now (or
    /// `limit` passes); returns whether they did.
    pub async fn progress(&self, n: usize, limit: Duration) -> bool {
        let base: Vec<usize> = Which::ALL.iter().map(|w| self.ledger(*w).acked()).collect();
        let start = Instant::now();
        while start.elapsed() < limit {
            if Which::ALL.iter().zip(&base).all(|(w, b)| self.ledger(*w).acked() >= b + n) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Waits until every daemon's clients were acknowledged after `t` (or `limit`
    /// passes); returns the time each took, by daemon.
    pub async fn recovered_after(&self, t: Instant, limit: Duration) -> HashMap<&'static str, Option<Duration>> {
        let start = Instant::now();
        loop {
            let got: HashMap<&'static str, Option<Duration>> = Which::ALL
                .iter()
                .map(|w| (w.program(), self.ledger(*w).first_ack_after(t).map(|a| a.duration_since(t))))
                .collect();
            if got.values().all(Option::is_some) || start.elapsed() >= limit {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every client (each ends its current exchange first).
    pub async fn finish(mut self) -> Load {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(clients::REPLY_WAIT + Duration::from_secs(5), t).await;
        }
        self
    }
}

fn common_config(url: &str) -> String {
    format!(
        r#"[server]
name = "fault.test"
[database]
url = "{url}"
max_connections = 8
acquire_timeout = 5
[limits]
max_clients = 500
max_per_address = 0
connection_rate = 0
error_delay = 0
max_errors = 1000
shutdown_grace = 5
[stats]
enabled = false
[log]
level = "info"
[privileges]
allow_root = true
"#
    )
}

fn config(which: Which, url: &str, port: u16, cert: &TestCert) -> String {
    let base = common_config(url);
    match which {
        Which::Smtp => format!(
            "{base}[listen]\naddresses = [\"127.0.0.1:{port}\"]\n[smtpd]\nflood_messages = 0\nmax_message_size = 1048576\n"
        ),
        Which::Pop3 => format!(
            "{base}[listen]\naddresses = [\"127.0.0.1:{port}\"]\n[pop3d]\nlock_lease = {LOCK_LEASE}\nrehash_legacy = false\n"
        ),
        Which::Tmtp => format!(
            "{base}[listen]\ntls_addresses = [\"127.0.0.1:{port}\"]\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n[tmtpd]\nauth = 0\n",
            cert.cert.display(),
            cert.key.display()
        ),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// A new TMTP account with one node, made by `mmtmtpd -c config admin add-user`: its
/// uid and node secret.
///
/// # Panics
/// If the command fails.
pub fn add_tmtp_user(config: &Path) -> (String, String) {
    // On Galera a node can refuse a connection's setup with 1213 (seen in a CI run); the
    // store asks again on the same connection and then on new ones within its timeout,
    // and this asks the command again beyond that.
    let out = crate::galera::while_settling(|| {
        std::process::Command::new(crate::bin("mmtmtpd", "tmtpd"))
            .arg("-c")
            .arg(config)
            .args(["admin", "add-user", "--nodes", "1"])
            .output()
            .expect("mmtmtpd admin")
    });
    assert!(out.status.success(), "mmtmtpd admin add-user: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    (lines[0].clone(), lines[1].clone())
}

/// Runs SQL that returns `(text, bytes)` rows on any backend.
async fn text_bytes(store: &Store, sql: &'static str) -> Vec<(String, Vec<u8>)> {
    let r = match store {
        Store::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await,
        Store::MySql(p) => sqlx::query_as(sql).fetch_all(p).await,
        Store::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await,
    };
    r.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Runs SQL that returns `(text, number, number)` rows on any backend.
async fn text_numbers(store: &Store, sql: &'static str) -> Vec<(String, i64, i64)> {
    let r = match store {
        Store::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await,
        Store::MySql(p) => sqlx::query_as(sql).fetch_all(p).await,
        Store::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await,
    };
    r.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

impl Scenario {
    /// Prepares `db` (schema and fixtures) and starts the three daemons on it.
    ///
    /// # Panics
    /// If any of that fails.
    pub async fn start(db: Database, fault: &str) -> Scenario {
        let dir = tempfile::Builder::new().prefix("mmmail-fault-run-").tempdir().expect("temp dir");
        let url = db.url();
        let store = Store::prepare(&DatabaseConfig::from_url(url.clone())).await.expect("prepare database");
        let backend = db.backend();
        let (user, now) = (backend.user_table(), backend.now());
        let hash = common::password::hash(PASSWORD.as_bytes()).expect("hash");
        let sql = |s: String| {
            let store = store.clone();
            async move { store.execute_admin_sql(&s).await.unwrap_or_else(|e| panic!("{s}: {e}")) }
        };
        sql(format!("INSERT INTO {user} (user_name, user_passwd, user_created) VALUES ('fault', '{hash}', {now})"))
            .await;
        let uid = store.user_password("fault").await.expect("user").expect("user row").id;
        let boxes = (0..SMTP_BOXES)
            .map(|i| format!("smtp-{i}@fault.test"))
            .chain((0..POP3_BOXES).map(|i| format!("pop-{i}@fault.test")));
        for b in boxes {
            sql(format!("INSERT INTO box VALUES ('{b}', {uid}, 0, 0, 0, 0, {now}, {now}, {now})")).await;
        }
        let mut pop3_uids = Vec::new();
        for i in 0..POP3_BOXES {
            let address = format!("pop-{i}@fault.test");
            for n in 0..POP3_MESSAGES {
                let uid = format!("pop{i}m{n}x{}", common::random_hex(4));
                let body = clients::smtp_message(&uid, &address, 2048);
                let copy = MailCopy {
                    box_address: address.clone(),
                    uid: uid.clone(),
                    trace: b"Return-Path: <fault@sender.test>\r\n".to_vec(),
                };
                store.deliver(&Delivery { body: &body, copies: vec![copy] }).await.expect("prefill");
                pop3_uids.push(uid);
            }
        }
        let cert = TestCert::generate(dir.path());
        let admin_cfg = dir.path().join("admin.toml");
        std::fs::write(&admin_cfg, config(Which::Tmtp, &url, 1, &cert)).expect("admin config");
        let (sender, recipient) = blocking(move || (add_tmtp_user(&admin_cfg), add_tmtp_user(&admin_cfg))).await;
        let mut sc = Scenario {
            db,
            store,
            dir,
            cert,
            daemons: HashMap::new(),
            logs: Vec::new(),
            pop3_uids,
            tmtp_sender: sender,
            tmtp_recipient: recipient,
            fault: fault.to_owned(),
            killed_at: None,
        };
        for w in Which::ALL {
            sc.start_first(w).await;
        }
        sc
    }

    async fn start_first(&mut self, which: Which) {
        let (dir, url, cert) = (self.dir.path().to_path_buf(), self.db.url(), self.cert_copy());
        let bin = crate::bin(which.program(), which.package());
        let daemon = blocking(move || Daemon::start(&bin, &dir, |port| config(which, &url, port, &cert))).await;
        let config = self.dir.path().join(format!("{}-{}.toml", which.program(), daemon.port));
        self.logs.push(daemon.log.clone());
        let port = daemon.port;
        self.daemons.insert(which.program(), Running { daemon: Some(daemon), config, port, restarts: 0 });
    }

    fn cert_copy(&self) -> TestCert {
        TestCert { cert: self.cert.cert.clone(), key: self.cert.key.clone(), der: self.cert.der.clone() }
    }

    fn running(&mut self, which: Which) -> &mut Running {
        self.daemons.get_mut(which.program()).expect("daemon started")
    }

    /// The daemon's listening address.
    pub fn addr(&self, which: Which) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.daemons[which.program()].port))
    }

    /// `kill -9` of one daemon.
    pub fn kill(&mut self, which: Which) {
        self.killed_at = Some(common::store::unix_now());
        if let Some(d) = self.running(which).daemon.take() {
            d.signal("KILL");
            drop(d);
        }
    }

    /// SIGTERM to one daemon, and waits until it exited.
    pub async fn stop(&mut self, which: Which) {
        if let Some(d) = self.running(which).daemon.take() {
            d.signal("TERM");
            let pid = d.pid();
            blocking(move || {
                let gone = || !Path::new(&format!("/proc/{pid}")).exists() || proc_is_zombie(pid);
                let start = Instant::now();
                while !gone() && start.elapsed() < Duration::from_secs(30) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                drop(d);
            })
            .await;
        }
    }

    /// Starts a stopped or killed daemon again with the same config and port.
    pub async fn restart(&mut self, which: Which) {
        let bin = crate::bin(which.program(), which.package());
        let r = self.running(which);
        r.restarts += 1;
        let (config, port) = (r.config.clone(), r.port);
        let log = config.with_extension(format!("restart{}.log", r.restarts));
        let log2 = log.clone();
        let daemon = blocking(move || Daemon::start_with_file(&bin, &config, port, log2)).await;
        self.logs.push(log);
        self.running(which).daemon = Some(daemon);
    }

    /// Starts the clients: `smtp` senders, `pop3` readers (one per box, at most
    /// [`POP3_BOXES`]) and `tmtp` posters.
    pub fn load(&self, smtp: usize, pop3: usize, tmtp: usize) -> Load {
        let stop: Stop = Default::default();
        let (sl, pl, tl) = (Ledger::default(), Ledger::default(), Ledger::default());
        let mut tasks = Vec::new();
        for i in 0..smtp {
            let rcpt = format!("smtp-{}@fault.test", i % SMTP_BOXES);
            let tag = format!("s{i}x{}", common::random_hex(3));
            tasks.push(tokio::spawn(clients::smtp_worker(
                self.addr(Which::Smtp),
                rcpt,
                tag,
                4096,
                sl.clone(),
                stop.clone(),
            )));
        }
        for i in 0..pop3.min(POP3_BOXES) {
            tasks.push(tokio::spawn(clients::pop3_worker(
                self.addr(Which::Pop3),
                format!("pop-{i}@fault.test"),
                PASSWORD.into(),
                5,
                pl.clone(),
                stop.clone(),
            )));
        }
        for i in 0..tmtp {
            let account = TmtpAccount {
                addr: self.addr(Which::Tmtp),
                tls: self.cert.connector(),
                uid: self.tmtp_sender.0.clone(),
                node: self.tmtp_sender.1.clone(),
            };
            let tag = format!("t{i}x{}", common::random_hex(3));
            tasks.push(tokio::spawn(clients::tmtp_worker(
                account,
                self.tmtp_recipient.0.clone(),
                tag,
                1500,
                tl.clone(),
                stop.clone(),
            )));
        }
        Load { stop, smtp: sl, pop3: pl, tmtp: tl, tasks }
    }

    /// Checks every ledger against the database: one [`Row`] per daemon (with
    /// `recovery` from `recovered`), each written to the report. The TMTP posts are
    /// checked twice: as queue rows, then as deliveries to the recipient (mmtmtpd is
    /// started again if a fault left it down); then the daemons are stopped cleanly. Also asserts what holds for every fault: box counters equal a recount,
    /// no POP3 lock outlives its fault (only a killed session's lock may be left, and
    /// only until its lease ends), no daemon log shows a panic, and every row is
    /// [`Row::ok`].
    ///
    /// # Panics
    /// When any of that does not hold.
    pub async fn verify(&mut self, load: &Load, recovered: &HashMap<&'static str, Option<Duration>>) -> Vec<Row> {
        let backend = match self.db.backend() {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
        };
        let row = |daemon: Which| Row {
            fault: self.fault.clone(),
            backend: backend.into(),
            daemon: daemon.program().into(),
            recovery: recovered.get(daemon.program()).copied().flatten(),
            ..Row::default()
        };
        // SMTP: each marker stored once per acknowledged message.
        let mut stored: HashMap<String, usize> = HashMap::new();
        let rows = text_bytes(
            &self.store,
            "SELECT mail_box, message_data FROM mail JOIN message ON message_id = mail_message WHERE mail_box LIKE 'smtp-%'",
        )
        .await;
        for (_, data) in rows {
            let text = String::from_utf8_lossy(&data);
            let key = text.strip_prefix(SMTP_MARKER).and_then(|t| t.split("\r\n").next()).unwrap_or("?").to_owned();
            *stored.entry(key).or_default() += 1;
        }
        let mut smtp = row(Which::Smtp);
        ledger::check_created(&load.smtp, &stored, &mut smtp);
        // POP3: UIDLs left.
        let left: Vec<String> =
            text_numbers(&self.store, "SELECT mail_uid, mail_id, mail_size FROM mail WHERE mail_box LIKE 'pop-%'")
                .await
                .into_iter()
                .map(|r| r.0)
                .collect();
        let mut pop3 = row(Which::Pop3);
        ledger::check_deleted(&load.pop3, &self.pop3_uids, &left, &mut pop3);
        // TMTP: posts queued for the recipient's node, by marker.
        let mut queued: HashMap<String, usize> = HashMap::new();
        let rows = text_bytes(
            &self.store,
            "SELECT q.queue_uid, c.chunk_data FROM tmtp_queue q JOIN tmtp_chunk c ON c.chunk_message = q.queue_message AND c.chunk_seq = 0",
        )
        .await;
        for (uid, data) in rows {
            if uid == self.tmtp_recipient.0 {
                let text = String::from_utf8_lossy(&data);
                *queued.entry(text.split(' ').next().unwrap_or("?").to_owned()).or_default() += 1;
            }
        }
        let mut tmtp = row(Which::Tmtp);
        ledger::check_created(&load.tmtp, &queued, &mut tmtp);
        // The same posts as the recipient receives them.
        if self.running(Which::Tmtp).daemon.is_none() {
            self.restart(Which::Tmtp).await;
        }
        let recipient = TmtpAccount {
            addr: self.addr(Which::Tmtp),
            tls: self.cert.connector(),
            uid: self.tmtp_recipient.0.clone(),
            node: self.tmtp_recipient.1.clone(),
        };
        let delivered = match clients::tmtp_drain(&recipient, Duration::from_secs(3)).await {
            Ok(d) => d,
            Err(e) => panic!("{}: the recipient's drain failed: {e}\n{}", self.fault, self.logs()),
        };
        assert_eq!(delivered, queued, "{}: deliveries differ from the queue", self.fault);
        for w in Which::ALL {
            self.stop(w).await;
        }
        let mut result = vec![smtp, pop3, tmtp];
        for (r, w) in result.iter_mut().zip(Which::ALL) {
            r.resolved = self
                .logs
                .iter()
                .filter(|l| l.file_name().is_some_and(|n| n.to_string_lossy().starts_with(w.program())))
                .map(|l| std::fs::read_to_string(l).unwrap_or_default().matches("the commit got no answer").count())
                .sum();
            ledger::report(r);
        }
        // Counters, locks, panics.
        let boxes = text_numbers(&self.store, "SELECT box_address, box_size, box_mails FROM box").await;
        for (address, size, mails) in boxes {
            let recount = self.store.recount(&address).await.expect("recount");
            assert_eq!(
                (size, mails),
                (recount.bytes, recount.messages),
                "{}: box {address} counters differ from a recount",
                self.fault
            );
        }
        // A lock left after a clean stop may only be a killed session's, expiring with
        // its lease.
        let now = common::store::unix_now();
        let allowed = self.killed_at.map_or(now, |k| k + i64::try_from(LOCK_LEASE).unwrap_or(0) + 1);
        let locks = text_numbers(&self.store, "SELECT lock_box, lock_expires, lock_expires FROM pop3_lock").await;
        let outliving: Vec<&(String, i64, i64)> = locks.iter().filter(|l| l.1 >= now && l.1 > allowed).collect();
        assert!(outliving.is_empty(), "{}: POP3 locks outlive the fault: {outliving:?} (now {now})", self.fault);
        for log in &self.logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            assert!(!text.contains("panicked"), "{}: a panic in {}:\n{text}", self.fault, log.display());
        }
        for r in &result {
            assert!(
                r.ok(),
                "{}: {r}\nsmtp refusals {:?}\npop3 refusals {:?}\ntmtp refusals {:?}",
                self.fault,
                load.smtp.refusal_samples(),
                load.pop3.refusal_samples(),
                load.tmtp.refusal_samples()
            );
            assert!(r.acked > 0, "{}: {} acknowledged nothing", self.fault, r.daemon);
        }
        result
    }

    /// Every daemon log written so far, concatenated (for messages).
    pub fn logs(&self) -> String {
        self.logs.iter().map(|l| std::fs::read_to_string(l).unwrap_or_default()).collect::<Vec<_>>().join("\n")
    }
}

fn proc_is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
}
