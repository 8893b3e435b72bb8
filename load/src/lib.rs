//! mmtmtpd-load: a load generator re-implementing mnm's simulation (spec/tmtp.md §14) over TCP+TLS:
//! N clients register (open registration), form groups of up to 100, then each runs
//! mnm's session cycle — TmtpRev, Login, OhiEdit `init` for its block, a Ping (odd
//! clients) or Post, Posts to two random users, a Post to its group with and without
//! itself, then drops the link and idles — for a number of cycles, with mnm's
//! 1–30 s pauses scaled by `sleep_scale` (0 = no pauses). Every client acks what it
//! receives. At the end every client logs in once more and drains its queue, and the
//! generator checks that every (message, recipient node) pair the protocol promises
//! arrived, and nothing else; it reports messages/s, deliveries/s, post-to-delivery
//! latency and the server's peak RSS. (mnm's occasional UserEdit `newnode` step is not
//! reproduced: every client keeps one node, so the expected recipients stay exact.)

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::sync::{Mutex, mpsc};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The server.
    pub addr: SocketAddr,
    /// PEM certificate the server presents (self-signed) or its CA.
    pub ca: std::path::PathBuf,
    /// TLS server name to expect.
    pub server_name: String,
    /// Simulated clients.
    pub clients: usize,
    /// Session cycles per client.
    pub cycles: usize,
    /// Multiplies mnm's 1–30 s step pauses (0 = none).
    pub sleep_scale: f64,
    /// Post sizes drawn from (bytes); mnm's current table by default.
    pub sizes: Vec<usize>,
    /// The server's process id, for its peak RSS.
    pub server_pid: Option<u32>,
    /// A run tag, so aliases are new on every run.
    pub tag: String,
}

/// mnm's current post size table (spec §14.2).
pub const MNM_SIZES: [usize; 11] = [80, 80, 80, 80, 400, 400, 2000, 2000, 10000, 50000, 250000];

/// What a run measured.
#[derive(Debug, Default)]
pub struct Report {
    /// Messages stored (posts and pings acked with a msgid).
    pub messages: usize,
    /// Deliveries received (unique message and node).
    pub deliveries: usize,
    /// Deliveries received again (resends after a dropped link).
    pub duplicates: usize,
    /// Expected deliveries that never came.
    pub missing: usize,
    /// Deliveries nobody expected.
    pub unexpected: usize,
    /// Frames whose headsum did not match.
    pub bad_headsums: usize,
    /// Acks with an error.
    pub errors: usize,
    /// Wall time of the cycles (without setup and final drain), seconds.
    pub seconds: f64,
    /// Post/ping to delivery, milliseconds: 50th and 99th percentile.
    pub latency_ms: (f64, f64),
    /// Data bytes posted.
    pub bytes: u64,
    /// Server peak RSS (VmHWM), KiB.
    pub server_rss_kib: Option<u64>,
}

impl Report {
    /// Every promised delivery arrived, nothing else did, no errors.
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.unexpected == 0 && self.bad_headsums == 0 && self.errors == 0
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.seconds.max(1e-9);
        writeln!(
            f,
            "messages stored   {} ({:.0}/s, {:.2} MiB data)",
            self.messages,
            self.messages as f64 / s,
            self.bytes as f64 / 1048576.0
        )?;
        writeln!(
            f,
            "deliveries        {} ({:.0}/s), duplicates {}",
            self.deliveries,
            self.deliveries as f64 / s,
            self.duplicates
        )?;
        writeln!(f, "latency post->delivery  p50 {:.1} ms  p99 {:.1} ms", self.latency_ms.0, self.latency_ms.1)?;
        writeln!(
            f,
            "missing {} unexpected {} bad headsums {} ack errors {}",
            self.missing, self.unexpected, self.bad_headsums, self.errors
        )?;
        match self.server_rss_kib {
            Some(k) => write!(f, "server peak RSS   {:.1} MiB", k as f64 / 1024.0),
            None => write!(f, "server peak RSS   unknown"),
        }
    }
}

#[derive(Default)]
struct Shared {
    /// msgid -> (send time, expected recipient uids)
    sent: HashMap<String, (Instant, Vec<String>)>,
    /// (msgid, uid) -> receive time
    got: HashMap<(String, String), Instant>,
    duplicates: usize,
    bad_headsums: usize,
    errors: usize,
    bytes: u64,
}

struct Link {
    w: Arc<Mutex<WriteHalf<Tls>>>,
    rx: mpsc::UnboundedReceiver<Value>,
}

fn frame(head: &Value, data: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(head).unwrap_or_default();
    let mut out = format!("{:04x}", json.len()).into_bytes();
    out.extend_from_slice(&json);
    out.extend_from_slice(data);
    out
}

fn headsum_ok(head: &Value) -> bool {
    head.as_object().is_some_and(tmtpd::proto::message::headsum_ok)
}

async fn connect(
    opts: &Options,
    tls: &tokio_rustls::TlsConnector,
    uid: Option<String>,
    shared: Arc<std::sync::Mutex<Shared>>,
) -> anyhow::Result<Link> {
    let tcp = tokio::net::TcpStream::connect(opts.addr).await?;
    let name = rustls_pki_types::ServerName::try_from(opts.server_name.clone())?;
    let stream = tls.connect(name, tcp).await?;
    let (mut r, w) = tokio::io::split(stream);
    let w = Arc::new(Mutex::new(w));
    let (tx, rx) = mpsc::unbounded_channel();
    let w2 = w.clone();
    tokio::spawn(async move {
        // Frames are read in place: `at` is where the next one starts; what is before it
        // is dropped once per read, not once per frame (the generator shares the
        // machine's cores with the server it measures).
        let (mut buf, mut at) = (Vec::new(), 0);
        let mut chunk = vec![0u8; 65536];
        loop {
            while buf.len() - at >= 4 {
                let Some(h) =
                    std::str::from_utf8(&buf[at..at + 4]).ok().and_then(|s| usize::from_str_radix(s, 16).ok())
                else {
                    return;
                };
                if buf.len() - at < 4 + h {
                    break;
                }
                let Ok(head) = serde_json::from_slice::<Value>(&buf[at + 4..at + 4 + h]) else { return };
                let n = head.get("datalen").and_then(Value::as_u64).unwrap_or(0) as usize;
                if buf.len() - at < 4 + h + n {
                    break;
                }
                let data = &buf[at + 4 + h..at + 4 + h + n];
                at += 4 + h + n;
                let queued = head.get("from").is_some() && head.get("id").is_some() && head["op"] != "ohi";
                if queued {
                    let id = head["id"].as_str().unwrap_or_default().to_owned();
                    {
                        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                        if !headsum_ok(&head) {
                            s.bad_headsums += 1;
                        }
                        if matches!(head["op"].as_str(), Some("delivery" | "ping"))
                            && let Some(me) = &uid
                        {
                            // Folded rather than short-circuited, so that it is vectorized.
                            if data.iter().fold(0u8, |acc, b| acc | b) != 0 {
                                s.bad_headsums += 1;
                            }
                            match s.got.entry((id.clone(), me.clone())) {
                                std::collections::hash_map::Entry::Occupied(_) => s.duplicates += 1,
                                std::collections::hash_map::Entry::Vacant(v) => {
                                    v.insert(Instant::now());
                                }
                            }
                        }
                    }
                    let ack = frame(&json!({"Op":10,"Id":id,"Type":"ok"}), b"");
                    let _ = w2.lock().await.write_all(&ack).await;
                }
                if tx.send(head).is_err() {
                    return;
                }
            }
            buf.drain(..at);
            at = 0;
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    Ok(Link { w, rx })
}

impl Link {
    async fn send(&self, head: Value, data: &[u8]) -> anyhow::Result<()> {
        let mut w = self.w.lock().await;
        w.write_all(&frame(&head, data)).await?;
        Ok(w.flush().await?)
    }

    /// The next frame with op `op` (others are skipped), within 30 s.
    async fn expect(&mut self, op: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(h)) if h["op"] == op => return Ok(h),
                Ok(Some(h)) if h["op"] == "quit" => anyhow::bail!("quit: {}", h["error"]),
                Ok(Some(_)) => {}
                _ => anyhow::bail!("no {op} frame"),
            }
        }
    }

    async fn close(self) {
        let _ = self.w.lock().await.shutdown().await;
    }
}

struct Client {
    k: usize,
    uid: String,
    node: String,
    alias: String,
}

fn pseudo(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn tls_connector(ca: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let cfg = tokio_rustls::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

async fn pause(opts: &Options, seed: &mut u64) {
    if opts.sleep_scale > 0.0 {
        let secs = (pseudo(seed) % 30 + 1) as f64 * opts.sleep_scale;
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    }
}

/// Runs the simulation.
///
/// # Errors
/// Setup failures (connection, registration, groups); verification failures are in the
/// [`Report`].
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.clients >= 2, "at least 2 clients");
    let tls = tls_connector(&opts.ca)?;
    let shared = Arc::new(std::sync::Mutex::new(Shared::default()));

    // Setup: register everyone, then groups of 100 (the first of each invites, the
    // others join).
    let mut clients = Vec::new();
    for k in 0..opts.clients {
        let mut l = connect(&opts, &tls, None, shared.clone()).await?;
        l.send(json!({"Op":0,"Id":"1"}), b"").await?;
        l.expect("tmtprev").await?;
        let alias = format!("load-{}-{k}", opts.tag);
        l.send(json!({"Op":1,"NewNode":"load","NewAlias":alias}), b"").await?;
        let reg = l.expect("registered").await?;
        anyhow::ensure!(reg.get("error").is_none(), "register: {}", reg["error"]);
        let uid = reg["uid"].as_str().unwrap_or_default().to_owned();
        let node = reg["nodeid"].as_str().unwrap_or_default().to_owned();
        l.send(json!({"Op":12}), b"").await?;
        l.close().await;
        clients.push(Client { k, uid, node, alias });
    }
    let group_of = |k: usize| format!("group-{}-{}", opts.tag, k / 100);
    for leader in clients.iter().step_by(100) {
        let mut l = login(&opts, &tls, leader, shared.clone()).await?;
        for c in clients.iter().skip(leader.k + 1).take(99) {
            l.send(json!({"Op":5,"Id":"i","Gid":group_of(leader.k),"From":leader.alias,"To":c.alias,"Datalen":0}), b"")
                .await?;
            let ack = l.expect("ack").await?;
            anyhow::ensure!(ack.get("error").is_none(), "invite: {}", ack["error"]);
        }
        l.close().await;
    }
    for c in clients.iter().filter(|c| c.k % 100 != 0) {
        let mut l = login(&opts, &tls, c, shared.clone()).await?;
        l.send(json!({"Op":6,"Id":"j","Gid":group_of(c.k),"Act":"join"}), b"").await?;
        let ack = l.expect("ack").await?;
        anyhow::ensure!(ack.get("error").is_none(), "join: {}", ack["error"]);
        l.close().await;
    }
    let members: HashMap<String, Vec<String>> = clients.iter().fold(HashMap::new(), |mut m, c| {
        m.entry(group_of(c.k)).or_default().push(c.uid.clone());
        m
    });

    // The cycles.
    let clients = Arc::new(clients);
    let members = Arc::new(members);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..opts.clients {
        let (opts, tls, shared, clients, members) =
            (opts.clone(), tls.clone(), shared.clone(), clients.clone(), members.clone());
        tasks.spawn(async move { cycle(&opts, &tls, k, &clients, &members, &shared).await });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let seconds = started.elapsed().as_secs_f64();

    // Everyone logs in once more and takes what is left.
    let mut tasks = tokio::task::JoinSet::new();
    for c in clients.iter() {
        let (opts, tls, shared) = (opts.clone(), tls.clone(), shared.clone());
        let (uid, node, k, alias) = (c.uid.clone(), c.node.clone(), c.k, c.alias.clone());
        tasks.spawn(async move {
            let c = Client { k, uid, node, alias };
            let mut l = login(&opts, &tls, &c, shared.clone()).await?;
            // Drain until quiet.
            while tokio::time::timeout(Duration::from_secs(2), l.rx.recv()).await.ok().flatten().is_some() {}
            l.close().await;
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }

    let s = shared.lock().unwrap_or_else(|p| p.into_inner());
    let mut report = Report {
        seconds,
        duplicates: s.duplicates,
        bad_headsums: s.bad_headsums,
        errors: s.errors,
        bytes: s.bytes,
        ..Report::default()
    };
    let mut expected: HashSet<(String, String)> = HashSet::new();
    let mut latencies = Vec::new();
    for (id, (at, uids)) in &s.sent {
        report.messages += 1;
        for u in uids {
            expected.insert((id.clone(), u.clone()));
            if let Some(t) = s.got.get(&(id.clone(), u.clone())) {
                latencies.push(t.saturating_duration_since(*at).as_secs_f64() * 1000.0);
            }
        }
    }
    report.deliveries = s.got.len();
    report.missing = expected.iter().filter(|p| !s.got.contains_key(*p)).count();
    report.unexpected = s.got.keys().filter(|p| !expected.contains(*p)).count();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
    report.latency_ms = (pct(0.5), pct(0.99));
    report.server_rss_kib = opts.server_pid.and_then(|pid| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.split_whitespace().next()?.parse().ok()
    });
    Ok(report)
}

/// Logs in as `c`. A login refused with "node already connected" (the server has not
/// yet seen the node's previous link close: mnm, or another instance holding its lease)
/// is tried again after a short pause, up to [`RELOGINS`] times, so that every setting
/// runs against any TMTP server.
async fn login(
    opts: &Options,
    tls: &tokio_rustls::TlsConnector,
    c: &Client,
    shared: Arc<std::sync::Mutex<Shared>>,
) -> anyhow::Result<Link> {
    let mut tries = 0;
    loop {
        let mut l = connect(opts, tls, Some(c.uid.clone()), shared.clone()).await?;
        let mut hello = frame(&json!({"Op":0,"Id":"1"}), b"");
        hello.extend_from_slice(&frame(&json!({"Op":2,"Uid":c.uid,"Node":c.node}), b""));
        l.w.lock().await.write_all(&hello).await?;
        match l.expect("info").await {
            Ok(_) => return Ok(l),
            Err(e) if tries < RELOGINS && e.to_string().contains("node already connected") => {
                tries += 1;
                l.close().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Logins tried again after "node already connected" (100 ms apart).
const RELOGINS: u32 = 100;

/// Sends a post or ping and records it with its expected recipients once acked.
async fn store(
    l: &mut Link,
    head: Value,
    data: &[u8],
    recipients: Vec<String>,
    shared: &std::sync::Mutex<Shared>,
) -> anyhow::Result<()> {
    let at = Instant::now();
    l.send(head, data).await?;
    let ack = l.expect("ack").await?;
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    match ack.get("msgid").and_then(Value::as_str) {
        Some(id) => {
            s.sent.insert(id.to_owned(), (at, recipients));
            s.bytes += data.len() as u64;
        }
        None => s.errors += 1,
    }
    Ok(())
}

async fn cycle(
    opts: &Options,
    tls: &tokio_rustls::TlsConnector,
    k: usize,
    clients: &[Client],
    members: &HashMap<String, Vec<String>>,
    shared: &Arc<std::sync::Mutex<Shared>>,
) -> anyhow::Result<()> {
    let me = &clients[k];
    let n = clients.len();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (k as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let group = format!("group-{}-{}", opts.tag, k / 100);
    let block: Vec<Value> = clients.iter().skip(k / 100 * 100).take(100).map(|c| json!({"Id":c.uid})).collect();
    for _ in 0..opts.cycles {
        let mut l = login(opts, tls, me, shared.clone()).await?;
        l.send(json!({"Op":4,"Id":"o","Type":"init","For":block}), b"").await?;
        l.expect("ack").await?;
        for step in 4..=19 {
            pause(opts, &mut seed).await;
            let size = opts.sizes[(pseudo(&mut seed) % opts.sizes.len() as u64) as usize];
            let data = vec![0u8; size];
            match step {
                4 if k % 2 == 1 => {
                    let to = &clients[k - 1];
                    let head = json!({"Op":9,"Id":"p","From":me.alias,"To":to.alias,"Datalen":3});
                    store(&mut l, head, &[0, 0, 0], vec![to.uid.clone()], shared).await?;
                }
                18 | 19 => {
                    let kind = if step == 18 { 2 } else { 3 };
                    let head = json!({"Op":7,"Id":"g","Datalen":size,"For":[{"Id":group,"Type":kind}]});
                    let mut to: Vec<String> = members.get(&group).cloned().unwrap_or_default();
                    if kind == 3 {
                        to.retain(|u| u != &me.uid);
                    }
                    store(&mut l, head, &data, to, shared).await?;
                }
                _ => {
                    let r = (pseudo(&mut seed) % n as u64) as usize;
                    let (a, b) = (&clients[r], &clients[(r + 1) % n]);
                    let head =
                        json!({"Op":7,"Id":"u","Datalen":size,"For":[{"Id":a.uid,"Type":1},{"Id":b.uid,"Type":1}]});
                    let mut to = vec![a.uid.clone(), b.uid.clone()];
                    to.dedup();
                    store(&mut l, head, &data, to, shared).await?;
                }
            }
        }
        // Step 20: drop the link (no Quit), idle, start again.
        l.close().await;
        pause(opts, &mut seed).await;
    }
    Ok(())
}
