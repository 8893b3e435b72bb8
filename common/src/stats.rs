//! The stats client every daemon uses to report counters to mmstatd (spec/mail.md §5.2,
//! design.md "Process model"): fire-and-forget datagrams on a local Unix datagram
//! socket. A datagram is one transaction of `OP FLAG VALUE KEY` records, each on its own
//! line; mmstatd applies all of its records or none.
//!
//! Counting never delays or fails a daemon. In a daemon ([`Stats::start_sender`]) a
//! batch goes into an in-process queue (at most [`QUEUE_MAX`] bytes) that one sender
//! task drains in order, packing whole batches into datagrams of up to
//! [`MAX_DATAGRAM`] bytes and waiting while mmstatd's socket queue is full (Linux holds
//! only `net.unix.max_dgram_qlen` datagrams, 10 by default: a burst of connections
//! overflowed it). The sender waits [`LINGER`] after the first batch it is woken for,
//! so that under load the batches of that moment share datagrams: one RETR or one
//! delivery is a batch, and a datagram each cost both the daemon and mmstatd a wake-up
//! and a system call per message (issue 16). Updates are dropped only when that queue
//! is full (mmstatd stopped reading) or mmstatd is not there at all; drops are
//! counted, logged at most once a minute, and reported to mmstatd as
//! `<daemon>|total|stats-dropped` once it takes updates again. Without the sender
//! (tools, tests) a batch is sent at once, non-blocking, and dropped the same way.
//!
//! Gauges cannot drift: the owner sends absolute values (`S`) for
//! `<daemon>|current|connections` and `<daemon>|who|<address>`, and re-sends the
//! connection count every [`GAUGE_PERIOD`], so a dropped or reordered update is healed
//! by the next one.
//!
//! The socket is connected while the daemon is still root (before `chroot`), so the
//! daemon can report after it dropped its privileges; when mmstatd restarts, the client
//! reconnects by path (at most once a second), which inside a `chroot` jail only works
//! when the socket is reachable there.

use std::collections::VecDeque;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::{Problems, Validate};

/// Largest datagram mmstatd accepts, in bytes (spec/mail.md §5.2).
pub const MAX_DATAGRAM: usize = 8192;
/// Largest key, in bytes (spec/mail.md §5.2).
pub const MAX_KEY: usize = 255;
/// Where mmstatd listens for updates unless `[stats] socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/mmstatd/mmstatd.sock";

/// Bytes of updates a daemon holds for mmstatd while its socket cannot take them; more
/// are dropped (and counted).
pub const QUEUE_MAX: usize = 1 << 20;
/// How long the sender task lets batches gather before it sends them: a count reaches
/// mmstatd at most this much later than it happened (plus mmstatd's own delay).
pub const LINGER: Duration = Duration::from_millis(20);
/// How often a daemon re-sends its gauges (seconds between heals of a lost update).
pub const GAUGE_PERIOD: Duration = Duration::from_secs(10);

/// How often a dropped update may be logged.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// How often a disconnected client may try to reconnect.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// `[stats]`: where counters go (the same key in every daemon's file and in mmstatd's).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    /// mmstatd's datagram socket.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// `false` turns counting off (no socket is opened).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}
fn default_true() -> bool {
    true
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self { socket: default_socket(), enabled: true }
    }
}

impl StatsConfig {
    /// Counting switched off (tests, benchmarks).
    pub fn disabled() -> Self {
        Self { enabled: false, ..Self::default() }
    }
}

impl Validate for StatsConfig {
    fn validate(&self, p: &mut Problems) {
        if self.enabled && self.socket.as_os_str().is_empty() {
            p.add("stats.socket", "must name mmstatd's socket (or set enabled = false)");
        }
    }
}

/// Whether a key mmstatd creates survives a restart of its owner (spec/mail.md §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flag {
    /// `P`: kept until deleted.
    Persistent,
    /// `V`: the owning daemon clears it when it starts.
    Volatile,
}

impl Flag {
    /// The letter on the wire and in `mmstat` output.
    pub fn letter(self) -> char {
        match self {
            Flag::Persistent => 'P',
            Flag::Volatile => 'V',
        }
    }

    /// The flag for its letter.
    pub fn from_letter(s: &str) -> Option<Flag> {
        match s {
            "P" => Some(Flag::Persistent),
            "V" => Some(Flag::Volatile),
            _ => None,
        }
    }
}

/// One component of a key made safe: `|`, `*`, `?`, whitespace and control characters
/// become `_`, and the result is cut to [`MAX_KEY`] bytes at a character boundary
/// (spec/mail.md §3.10). Empty input gives `_`.
///
/// ```
/// use common::stats::sanitize_component;
/// assert_eq!(sanitize_component("a|b*c?d e\n"), "a_b_c_d_e_");
/// assert_eq!(sanitize_component(""), "_");
/// ```
pub fn sanitize_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_KEY));
    for c in s.chars() {
        let c = if matches!(c, '|' | '*' | '?') || c.is_whitespace() || c.is_control() { '_' } else { c };
        if out.len() + c.len_utf8() > MAX_KEY {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

struct Inner {
    socket: UnixDatagram,
    path: PathBuf,
    daemon: &'static str,
    started: Instant,
    /// Milliseconds after `started` of the last reconnection attempt.
    last_connect: AtomicU64,
    /// Milliseconds after `started` of the last "dropped" log line (0 = never).
    last_log: AtomicU64,
    /// Updates dropped since the start.
    dropped: AtomicU64,
    /// Dropped updates mmstatd has not been told about yet.
    unreported: AtomicU64,
    /// Whether a sender task drains [`Inner::queue`].
    queued: AtomicBool,
    /// Batches queued or being sent.
    pending: AtomicUsize,
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
    /// Set by [`Stats::flush`]: the sender no longer lingers.
    hurry: AtomicBool,
    /// Cuts a linger short when [`Inner::hurry`] is set.
    hurried: tokio::sync::Notify,
}

/// Whole batches (each at most one datagram) waiting for the sender task.
#[derive(Default)]
struct Queue {
    batches: VecDeque<Vec<u8>>,
    bytes: usize,
}

impl Inner {
    fn since_start(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Claims a periodic slot: true when `every` passed since the slot was last claimed.
    fn claim(&self, slot: &AtomicU64, every: Duration) -> bool {
        let now = self.since_start().max(1);
        let last = slot.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        due && slot.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// Counts `records` dropped updates (one datagram's worth) because of `cause`.
    fn dropped(&self, records: u64, cause: &dyn std::fmt::Display) {
        let n = self.dropped.fetch_add(records, Ordering::Relaxed) + records;
        self.unreported.fetch_add(records, Ordering::Relaxed);
        if self.claim(&self.last_log, LOG_EVERY) {
            tracing::warn!(socket = %self.path.display(), cause = %cause, dropped = n, "stats updates dropped (is mmstatd running?)");
        }
    }

    /// The record telling mmstatd how many updates were dropped, if any were; the count
    /// is taken (give it back with [`Inner::unsent_report`] if the send fails).
    fn drop_report(&self) -> Option<(u64, Vec<u8>)> {
        let n = self.unreported.swap(0, Ordering::Relaxed);
        (n > 0).then(|| (n, format!("U P {n} {}|total|stats-dropped\n", self.daemon).into_bytes()))
    }

    fn unsent_report(&self, n: u64) {
        self.unreported.fetch_add(n, Ordering::Relaxed);
    }

    /// Sends at once, without blocking (the path without a sender task).
    fn send_now(&self, datagram: &[u8]) {
        let mut result = self.socket.send(datagram);
        if let Err(e) = &result
            && reconnectable(e)
            && self.claim(&self.last_connect, RECONNECT_EVERY)
            && self.socket.connect(&self.path).is_ok()
        {
            result = self.socket.send(datagram);
        }
        match result {
            Ok(_) => {
                if let Some((n, report)) = self.drop_report()
                    && self.socket.send(&report).is_err()
                {
                    self.unsent_report(n);
                }
            }
            Err(e) => self.dropped(records(datagram), &e),
        }
    }

    /// Hands a batch to the sender task; drops it when the queue is full.
    fn enqueue(&self, datagram: &[u8]) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.bytes + datagram.len() > QUEUE_MAX {
                drop(q);
                self.dropped(records(datagram), &"queue full: mmstatd is not reading");
                return;
            }
            q.bytes += datagram.len();
            q.batches.push_back(datagram.to_vec());
            self.pending.fetch_add(1, Ordering::SeqCst);
        }
        self.wake.notify_one();
    }

    /// Takes every queued batch, packed into datagrams of at most [`MAX_DATAGRAM`]
    /// bytes (whole batches only, in order), each with the number of batches in it.
    fn take(&self) -> Vec<(Vec<u8>, usize)> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.bytes = 0;
        let mut out: Vec<(Vec<u8>, usize)> = Vec::new();
        for b in q.batches.drain(..) {
            match out.last_mut() {
                Some((last, n)) if last.len() + b.len() <= MAX_DATAGRAM => {
                    last.extend_from_slice(&b);
                    *n += 1;
                }
                _ => out.push((b, 1)),
            }
        }
        out
    }
}

/// Records in a datagram (one per line).
fn records(datagram: &[u8]) -> u64 {
    datagram.iter().filter(|&&b| b == b'\n').count() as u64
}

/// The sender task: drains the queue in order, [`LINGER`] after it was woken (unless
/// the daemon is flushing at its end), waiting while mmstatd's socket is full.
async fn sender(inner: Arc<Inner>, socket: tokio::net::UnixDatagram) {
    loop {
        // A batch queued while the last ones were being sent left a permit: no wait.
        inner.wake.notified().await;
        if !inner.hurry.load(Ordering::SeqCst) {
            tokio::select! {
                () = tokio::time::sleep(LINGER) => {}
                () = inner.hurried.notified() => {}
            }
        }
        for (d, batches) in inner.take() {
            send_waiting(&inner, &socket, &d).await;
            inner.pending.fetch_sub(batches, Ordering::SeqCst);
        }
    }
}

/// Sends one datagram, waiting for room in mmstatd's queue; a missing or refusing
/// mmstatd drops it (after at most one reconnection attempt a second).
async fn send_waiting(inner: &Inner, socket: &tokio::net::UnixDatagram, datagram: &[u8]) {
    let mut result = socket.send(datagram).await;
    if let Err(e) = &result
        && reconnectable(e)
        && inner.claim(&inner.last_connect, RECONNECT_EVERY)
        && socket.connect(&inner.path).is_ok()
    {
        result = socket.send(datagram).await;
    }
    match result {
        Ok(_) => {
            if let Some((n, report)) = inner.drop_report()
                && socket.send(&report).await.is_err()
            {
                inner.unsent_report(n);
            }
        }
        Err(e) => inner.dropped(records(datagram), &e),
    }
}

fn reconnectable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_errno::ECONNREFUSED | libc_errno::ENOTCONN | libc_errno::ENOENT | libc_errno::EDESTADDRREQ)
    )
}

/// The errno values we react to (Linux and the BSDs agree on the ones used here only
/// through nix, which names them per platform).
mod libc_errno {
    use nix::errno::Errno;
    pub const ECONNREFUSED: i32 = Errno::ECONNREFUSED as i32;
    pub const ENOTCONN: i32 = Errno::ENOTCONN as i32;
    pub const ENOENT: i32 = Errno::ENOENT as i32;
    pub const EDESTADDRREQ: i32 = Errno::EDESTADDRREQ as i32;
}

/// A daemon's handle on mmstatd: cheap to clone; every key it sends starts with the
/// daemon's name (`mmsmtpd|…`). A disabled handle does nothing.
#[derive(Clone)]
pub struct Stats {
    inner: Option<Arc<Inner>>,
    daemon: &'static str,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats").field("daemon", &self.daemon).field("enabled", &self.inner.is_some()).finish()
    }
}

impl Stats {
    /// Opens the client for `daemon` (`"mmsmtpd"`). Never fails: a socket that cannot be
    /// created gives a disabled handle (logged), a socket path that does not exist yet
    /// is tried again when updates are sent.
    pub fn open(cfg: &StatsConfig, daemon: &'static str) -> Stats {
        if !cfg.enabled {
            return Stats::disabled(daemon);
        }
        let socket = match UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(cause = %e, "cannot create the stats socket; counting is off");
                return Stats::disabled(daemon);
            }
        };
        if let Err(e) = socket.connect(&cfg.socket) {
            tracing::info!(socket = %cfg.socket.display(), cause = %e, "mmstatd not reachable yet; will retry");
        }
        let inner = Inner {
            socket,
            path: cfg.socket.clone(),
            daemon,
            started: Instant::now(),
            last_connect: AtomicU64::new(0),
            last_log: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
            queued: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            queue: Mutex::new(Queue::default()),
            wake: tokio::sync::Notify::new(),
            hurry: AtomicBool::new(false),
            hurried: tokio::sync::Notify::new(),
        };
        Stats { inner: Some(Arc::new(inner)), daemon }
    }

    /// Starts the sender task on the current tokio runtime: from now on batches are
    /// queued and sent in order, waiting while mmstatd's socket is full (see the module
    /// notes). Once is enough; later calls do nothing.
    ///
    /// # Errors
    /// The socket could not be registered with the runtime (counting stays direct).
    pub fn start_sender(&self) -> io::Result<()> {
        let Some(inner) = &self.inner else { return Ok(()) };
        if inner.queued.load(Ordering::SeqCst) {
            return Ok(());
        }
        let socket = tokio::net::UnixDatagram::from_std(inner.socket.try_clone()?)?;
        if inner.queued.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        tokio::spawn(sender(inner.clone(), socket));
        Ok(())
    }

    /// Waits until every queued batch was sent (or dropped), at most `limit`: at the end
    /// of a daemon, so that its last counts reach mmstatd. From now on the sender sends
    /// what it is given at once ([`LINGER`] no longer applies).
    pub async fn flush(&self, limit: Duration) {
        let Some(inner) = &self.inner else { return };
        inner.hurry.store(true, Ordering::SeqCst);
        inner.hurried.notify_one();
        let deadline = tokio::time::Instant::now() + limit;
        while inner.pending.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A handle that sends nothing.
    pub fn disabled(daemon: &'static str) -> Stats {
        Stats { inner: None, daemon }
    }

    /// The daemon name every key starts with.
    pub fn daemon(&self) -> &'static str {
        self.daemon
    }

    /// Whether updates are sent at all.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Updates dropped so far because mmstatd could not take them.
    pub fn dropped(&self) -> u64 {
        self.inner.as_ref().map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }

    /// A new transaction; nothing is sent until [`Batch::send`].
    pub fn batch(&self) -> Batch<'_> {
        Batch { stats: self, buf: String::new(), cuts: Vec::new() }
    }

    /// Sends one update of `key` (components after the daemon name) by `delta`.
    pub fn update(&self, flag: Flag, key: &[&str], delta: i64) {
        if self.enabled() {
            self.batch().update(flag, key, delta).send();
        }
    }

    /// At start: deletes this daemon's volatile subtrees `<daemon>|current|*` and
    /// `<daemon>|who|*` and sets `<daemon>|current|connections` to 0 (spec/mail.md §3.10).
    pub fn started(&self) {
        self.batch()
            .delete(&["current", "*"])
            .delete(&["who", "*"])
            .set(Flag::Volatile, &["current", "connections"], 0)
            .send();
    }

    /// A connection from `who` (an address, as the gate counts it) was admitted; `open`
    /// connections are open now, `from_who` of them from `who`. Gauges are sent as
    /// absolute values.
    pub fn connection_opened(&self, who: &str, open: usize, from_who: u32) {
        self.batch()
            .update(Flag::Persistent, &["total", "connections"], 1)
            .set(Flag::Volatile, &["current", "connections"], i64::try_from(open).unwrap_or(i64::MAX))
            .set(Flag::Volatile, &["who", who], i64::from(from_who))
            .send();
    }

    /// A connection from `who` ended; `open` connections are still open, `remaining` of
    /// them from `who` (at 0 its `who` key is deleted, spec/mail.md §5.2 "Entry").
    pub fn connection_closed(&self, who: &str, open: usize, remaining: u32) {
        let mut b = self.batch();
        b.set(Flag::Volatile, &["current", "connections"], i64::try_from(open).unwrap_or(i64::MAX));
        if remaining == 0 {
            b.delete(&["who", who]);
        } else {
            b.set(Flag::Volatile, &["who", who], i64::from(remaining));
        }
        b.send();
    }

    /// The periodic heal ([`GAUGE_PERIOD`]): `open` connections are open now.
    pub fn gauges(&self, open: usize) {
        self.batch().set(Flag::Volatile, &["current", "connections"], i64::try_from(open).unwrap_or(i64::MAX)).send();
    }

    /// A refusal or failure of kind `cause` (`limits`, `flood`, `timeout`, `nofrom`,
    /// `relay`, `size`, `address`, `login`, …) caused by `who` (an address, or a box for
    /// `full`): `<daemon>|failed|<cause>|<who>` and `<daemon>|total|failed|<cause>`.
    pub fn failed(&self, cause: &str, who: &str) {
        self.batch()
            .update(Flag::Persistent, &["failed", cause, who], 1)
            .update(Flag::Persistent, &["total", "failed", cause], 1)
            .send();
    }
}

/// A transaction being built: records accumulate until [`Batch::send`]. Should the
/// records outgrow one datagram ([`MAX_DATAGRAM`]), they go in several, cut between
/// records, and each part is atomic on its own.
#[must_use = "a batch does nothing until sent"]
pub struct Batch<'a> {
    stats: &'a Stats,
    buf: String,
    /// Offsets in `buf` where a new datagram starts (after the first).
    cuts: Vec<usize>,
}

impl Batch<'_> {
    fn record(&mut self, op: char, flag: Flag, value: i64, key: &[&str], sanitize: bool) -> &mut Self {
        if !self.stats.enabled() {
            return self;
        }
        let start = self.buf.len();
        let mut line = String::with_capacity(64);
        line.push(op);
        line.push(' ');
        line.push(flag.letter());
        line.push(' ');
        line.push_str(&value.to_string());
        line.push(' ');
        let key_start = line.len();
        line.push_str(self.stats.daemon);
        for part in key {
            line.push('|');
            if sanitize {
                line.push_str(&sanitize_component(part));
            } else {
                line.push_str(part);
            }
        }
        if line.len() - key_start > MAX_KEY {
            let mut cut = key_start + MAX_KEY;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        line.push('\n');
        if start - self.cuts.last().copied().unwrap_or(0) + line.len() > MAX_DATAGRAM {
            self.cuts.push(start);
        }
        self.buf.push_str(&line);
        self
    }

    /// `U`: adds `delta` to `<daemon>|key…` (created with `flag` when missing). Key
    /// components are sanitised.
    pub fn update(&mut self, flag: Flag, key: &[&str], delta: i64) -> &mut Self {
        self.record('U', flag, delta, key, true)
    }

    /// `S`: sets `<daemon>|key…` to `value` (created with `flag` when missing).
    pub fn set(&mut self, flag: Flag, key: &[&str], value: i64) -> &mut Self {
        self.record('S', flag, value, key, true)
    }

    /// `R`: resets every key matching `<daemon>|pattern…` to 0 (`*` and `?` kept).
    pub fn reset(&mut self, pattern: &[&str]) -> &mut Self {
        self.record('R', Flag::Persistent, 0, pattern, false)
    }

    /// `D`: deletes every key matching `<daemon>|pattern…` (`*` and `?` kept).
    pub fn delete(&mut self, pattern: &[&str]) -> &mut Self {
        self.record('D', Flag::Volatile, 0, pattern, false)
    }

    /// The datagrams this batch makes (each at most [`MAX_DATAGRAM`] bytes).
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.cuts.iter().copied());
        let ends = self.cuts.iter().copied().chain(std::iter::once(self.buf.len()));
        starts.zip(ends).filter(|(a, b)| a < b).map(|(a, b)| &self.buf.as_bytes()[a..b])
    }

    /// Sends the batch (never blocks; see the module notes).
    pub fn send(&mut self) {
        if let Some(inner) = &self.stats.inner {
            let queued = inner.queued.load(Ordering::Relaxed);
            for d in self.datagrams() {
                if queued { inner.enqueue(d) } else { inner.send_now(d) }
            }
        }
        self.buf.clear();
        self.cuts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector() -> (tempfile::TempDir, UnixDatagram, Stats) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let stats = Stats::open(&StatsConfig { socket: path, enabled: true }, "mmtest");
        (dir, rx, stats)
    }

    fn recv(rx: &UnixDatagram) -> String {
        let mut buf = vec![0u8; 65536];
        let n = rx.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn a_connection_is_one_datagram_in_the_spec_format() {
        let (_d, rx, stats) = collector();
        stats.connection_opened("192.0.2.7", 5, 1);
        assert_eq!(
            recv(&rx),
            "U P 1 mmtest|total|connections\nS V 5 mmtest|current|connections\nS V 1 mmtest|who|192.0.2.7\n"
        );
        stats.connection_closed("192.0.2.7", 4, 0);
        assert_eq!(recv(&rx), "S V 4 mmtest|current|connections\nD V 0 mmtest|who|192.0.2.7\n");
        stats.connection_closed("192.0.2.7", 3, 2);
        assert_eq!(recv(&rx), "S V 3 mmtest|current|connections\nS V 2 mmtest|who|192.0.2.7\n");
        stats.gauges(3);
        assert_eq!(recv(&rx), "S V 3 mmtest|current|connections\n");
        stats.started();
        assert_eq!(recv(&rx), "D V 0 mmtest|current|*\nD V 0 mmtest|who|*\nS V 0 mmtest|current|connections\n");
    }

    #[test]
    fn client_data_cannot_forge_keys_or_records() {
        let (_d, rx, stats) = collector();
        stats.failed("login", "evil*|x\nU P 99 mmtest|total|connections");
        let got = recv(&rx);
        assert_eq!(got.lines().count(), 2, "{got}");
        assert!(got.starts_with("U P 1 mmtest|failed|login|evil__x_U_P_99_mmtest_total_connections\n"), "{got}");
        stats.update(Flag::Persistent, &["mailbox", &"x".repeat(1000)], 5);
        let got = recv(&rx);
        let key = got.trim_end().rsplit(' ').next().unwrap();
        assert_eq!(key.len(), MAX_KEY);
    }

    #[test]
    fn big_batches_are_cut_between_records() {
        let stats = Stats::disabled("x");
        assert_eq!(stats.batch().update(Flag::Persistent, &["a"], 1).datagrams().count(), 0);
        let (_d, _rx, stats) = collector();
        let mut b = stats.batch();
        let long = "k".repeat(200);
        for i in 0..100 {
            b.update(Flag::Persistent, &[&long, &i.to_string()], 1);
        }
        let grams: Vec<&[u8]> = b.datagrams().collect();
        assert!(grams.len() >= 3, "{}", grams.len());
        let mut records = 0;
        for g in &grams {
            assert!(g.len() <= MAX_DATAGRAM);
            assert!(g.ends_with(b"\n"));
            records += g.split(|c| *c == b'\n').filter(|l| !l.is_empty()).count();
        }
        assert_eq!(records, 100);
    }

    #[test]
    fn a_missing_mmstatd_costs_nothing_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.sock");
        let stats = Stats::open(&StatsConfig { socket: path.clone(), enabled: true }, "mmtest");
        for _ in 0..1000 {
            stats.connection_opened("192.0.2.1", 1, 1);
        }
        assert_eq!(stats.dropped(), 3000, "three updates each");
        // mmstatd appears: the client reconnects (at most once a second).
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        rx.set_nonblocking(true).unwrap();
        let mut got = None;
        while got.is_none() && Instant::now() < deadline {
            stats.update(Flag::Persistent, &["total", "x"], 1);
            let mut buf = [0u8; 512];
            if let Ok(n) = rx.recv(&mut buf) {
                got = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(got.as_deref(), Some("U P 1 mmtest|total|x\n"));
        // Then mmstatd learns how many updates it missed.
        rx.set_nonblocking(false).unwrap();
        assert_eq!(recv(&rx), format!("U P {} mmtest|total|stats-dropped\n", stats.dropped()));
    }

    /// A burst far beyond the kernel's queue of 10 datagrams (`net.unix.max_dgram_qlen`)
    /// arrives whole through the sender task: batches are packed and sent in order,
    /// waiting for room instead of being dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_arrives_whole_through_the_sender() {
        let (_d, rx, stats) = collector();
        stats.start_sender().unwrap();
        let n = 20_000i64;
        let reader = std::thread::spawn(move || {
            let (mut opened, mut last) = (0i64, String::new());
            let mut buf = vec![0u8; 65536];
            while let Ok(len) = rx.recv(&mut buf) {
                assert!(len <= MAX_DATAGRAM);
                for line in String::from_utf8_lossy(&buf[..len]).lines() {
                    if line.ends_with("|total|connections") {
                        opened += line.split(' ').nth(2).unwrap().parse::<i64>().unwrap();
                    }
                    if line.ends_with("|current|connections") {
                        last = line.to_owned();
                    }
                }
                if opened == n && last == "S V 0 mmtest|current|connections" {
                    break;
                }
            }
            (opened, last)
        });
        for i in 0..n {
            stats.connection_opened("192.0.2.9", usize::try_from(i + 1).unwrap(), 1);
        }
        stats.gauges(0);
        stats.flush(Duration::from_secs(20)).await;
        let (opened, last) = reader.join().unwrap();
        assert_eq!(opened, n, "every update arrived");
        assert_eq!(last, "S V 0 mmtest|current|connections", "in order: the last gauge wins");
        assert_eq!(stats.dropped(), 0);
    }

    /// Batches that come one at a time, as RETRs do, share datagrams: the sender lingers
    /// after the first, so mmstatd is not woken once per message. Every update arrives.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_of_one_moment_share_datagrams() {
        let (_d, rx, stats) = collector();
        stats.start_sender().unwrap();
        let n = 40;
        let reader = std::thread::spawn(move || {
            let (mut datagrams, mut counted) = (0, 0);
            let mut buf = vec![0u8; 65536];
            while counted < n
                && let Ok(len) = rx.recv(&mut buf)
            {
                datagrams += 1;
                counted += String::from_utf8_lossy(&buf[..len])
                    .lines()
                    .filter(|l| *l == "U P 1 mmtest|total|messages-out")
                    .count();
            }
            (datagrams, counted)
        });
        let sending = stats.clone();
        tokio::task::spawn_blocking(move || {
            for _ in 0..n {
                sending.update(Flag::Persistent, &["total", "messages-out"], 1);
                // Time enough for a sender that did not linger to send each alone.
                std::thread::sleep(Duration::from_micros(200));
            }
        })
        .await
        .unwrap();
        stats.flush(Duration::from_secs(20)).await;
        let (datagrams, counted) = reader.join().unwrap();
        assert_eq!(counted, n, "every update arrived");
        assert!(datagrams <= n / 4, "{n} batches came in {datagrams} datagrams");
    }

    /// Nobody reads: the in-process queue stops at [`QUEUE_MAX`] and the rest is dropped
    /// and counted, never blocking the caller.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_mmstatd_costs_a_bounded_queue() {
        let (_d, _rx, stats) = collector();
        stats.start_sender().unwrap();
        for _ in 0..100_000 {
            stats.update(Flag::Persistent, &["total", "x"], 1);
        }
        let inner = stats.inner.as_ref().unwrap();
        assert!(inner.queue.lock().unwrap().bytes <= QUEUE_MAX);
        assert!(stats.dropped() > 0);
    }

    #[test]
    fn a_full_queue_drops_instead_of_blocking() {
        let (_d, _rx, stats) = collector();
        // Nobody reads: the kernel queue fills, sends fail at once and are dropped
        // (a blocking send would hang this test forever).
        for _ in 0..100_000 {
            stats.update(Flag::Persistent, &["total", "x"], 1);
        }
        assert!(stats.dropped() > 0);
    }
}
