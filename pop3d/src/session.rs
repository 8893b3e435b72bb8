//! One POP3 session as a state machine that never touches a socket (style.md P1, P2).
//!
//! RFC 1939 (AUTHORIZATION, TRANSACTION and UPDATE states; the maildrop lock; deletions
//! only at QUIT), RFC 2449 (CAPA, response codes), RFC 3206 (`[AUTH]`, `[SYS/TEMP]`),
//! RFC 2595 (STLS), RFC 5034 with RFC 4616 (AUTH PLAIN). mmmail's login names and
//! password rules are in design.md and spec/mail.md §4.3.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::address::Address;
use common::password::{self, Verified};
use common::stats::{Flag, Stats};
use common::store::{BoxOwner, Retrieved, Run, Store, Update};

use crate::config::Config;
use crate::proto::command::{Command, MAX_COMMAND_LINE, MAX_SASL_LINE, SyntaxError, parse};
use crate::proto::message::top_len;
use crate::proto::reply::Reply;

/// What the connection loop must do after a line.
#[derive(Debug)]
pub enum Outcome {
    /// Send the status line.
    Reply(Reply),
    /// Send the status line, then these lines byte-stuffed, then the `.` line.
    Lines(Reply, Vec<String>),
    /// Send the status line, then the message's trace and the first `body_len` octets of
    /// its body, byte-stuffed, then the `.` line (RETR, TOP).
    Message(Reply, Retrieved, usize),
    /// Send the SASL continuation `+ ` and pass the next line to the session again.
    Continue,
    /// Send the status line, discard buffered input, run the TLS handshake, call
    /// [`Session::tls_started`].
    StartTls(Reply),
    /// Send the status line and close.
    Close(Reply),
}

/// `mailbox|<box>|messages-out`/`bytes-out` and the totals for one RETR of `octets`
/// (spec/mail.md §4.6).
fn count_out(stats: &Stats, address: &str, octets: usize) {
    let octets = i64::try_from(octets).unwrap_or(i64::MAX);
    stats
        .batch()
        .update(Flag::Persistent, &["mailbox", address, "messages-out"], 1)
        .update(Flag::Persistent, &["mailbox", address, "bytes-out"], octets)
        .update(Flag::Persistent, &["total", "messages-out"], 1)
        .update(Flag::Persistent, &["total", "bytes-out"], octets)
        .send();
}

/// Settings derived once from the config.
#[derive(Debug)]
pub struct Settings {
    /// `[server] name`.
    pub name: String,
    /// Whether STLS can be offered.
    pub tls_available: bool,
    /// `[pop3d] allow_plaintext_auth`.
    pub allow_plaintext_auth: bool,
    /// `[pop3d] dot_login`.
    pub dot_login: bool,
    /// `[pop3d] rehash_legacy`.
    pub rehash_legacy: bool,
    /// `[pop3d] lock_lease`, seconds.
    pub lock_lease: u64,
    /// `[pop3d] login_timeout`, seconds.
    pub login_timeout: u64,
    /// `[limits] max_errors`.
    pub max_errors: u32,
    /// Password verifications: `[pop3d] hash_concurrency` at once, in fair turns per
    /// address, with failures per address (issue 13). Kept across SIGHUP.
    pub logins: Arc<common::guard::Logins>,
    /// `[limits] ipv6_prefix`: how clients are grouped for fairness.
    pub ipv6_prefix: u8,
    /// Where counters go (spec/mail.md §4.6).
    pub stats: Stats,
}

impl Settings {
    /// Derives the settings from a validated config, with a stats client of its own.
    pub fn from_config(cfg: &Config) -> Self {
        Self::with_stats(cfg, Stats::open(&cfg.stats, "mmpop3d"), None)
    }

    /// Verification slots: `[pop3d] hash_concurrency`, or the number of CPUs.
    fn slots(cfg: &Config) -> usize {
        match cfg.own.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        }
    }

    /// Derives the settings from a validated config, counting with `stats`, keeping the
    /// login fairness state `logins` (SIGHUP) or starting a fresh one.
    pub fn with_stats(cfg: &Config, stats: Stats, logins: Option<Arc<common::guard::Logins>>) -> Self {
        let step = Duration::from_secs(cfg.limits.error_delay);
        let logins = match logins {
            Some(l) => {
                l.update(Self::slots(cfg), Duration::from_secs(cfg.bans.window), step);
                l
            }
            None => common::guard::Logins::new(Self::slots(cfg), Duration::from_secs(cfg.bans.window), step),
        };
        Self {
            name: cfg.server.name.clone(),
            tls_available: cfg.tls.is_some(),
            allow_plaintext_auth: cfg.own.allow_plaintext_auth,
            dot_login: cfg.own.dot_login,
            rehash_legacy: cfg.own.rehash_legacy,
            lock_lease: cfg.own.lock_lease,
            login_timeout: cfg.own.login_timeout,
            max_errors: cfg.limits.max_errors,
            logins,
            ipv6_prefix: cfg.limits.ipv6_prefix,
            stats,
        }
    }
}

/// The maildrop lock of a session: a database lease renewed in the background, released
/// with the deletions at QUIT, or when the session ends otherwise ([`Session::end`], or
/// when dropped). A release the database refused (an outage) is tried again in the
/// background until it succeeds or the lease would have expired anyway, so a box is
/// free again as soon as the database answers (issue 18).
#[derive(Debug)]
struct Lease {
    store: Store,
    address: String,
    owner: String,
    /// `[pop3d] lock_lease`, seconds.
    lease: u64,
    lost: Arc<AtomicBool>,
    refresher: tokio::task::JoinHandle<()>,
    held: bool,
}

/// First pause between attempts to release a lease after a failure; it doubles up to
/// [`RELEASE_PAUSE_MAX`].
const RELEASE_PAUSE: Duration = Duration::from_millis(250);
const RELEASE_PAUSE_MAX: Duration = Duration::from_secs(5);

impl Lease {
    fn start(store: &Store, address: &str, owner: String, lease: u64) -> Lease {
        let lost = Arc::new(AtomicBool::new(false));
        let refresher = {
            let (store, address, owner, lost) = (store.clone(), address.to_owned(), owner.clone(), lost.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs((lease / 3).max(1))).await;
                    match store.refresh_lock(&address, &owner, lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(r#box = %address, "maildrop lock lost");
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        // Keep trying: the lease outlives a short database outage.
                        Err(e) => tracing::warn!(r#box = %address, cause = %e, "maildrop lock not renewed"),
                    }
                }
            })
        };
        Lease { store: store.clone(), address: address.to_owned(), owner, lease, lost, refresher, held: true }
    }

    fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// The transaction that committed the deletions released the lock too.
    fn released_with_commit(mut self) {
        self.refresher.abort();
        self.held = false;
    }

    /// Releases the lock now; if the database refuses, keeps trying in the background.
    async fn release(mut self) {
        self.refresher.abort();
        self.held = false;
        if let Err(e) = self.store.unlock_box(&self.address, &self.owner).await {
            tracing::warn!(r#box = %self.address, cause = %e, "maildrop lock not released yet; trying again");
            release_later(self.store.clone(), self.address.clone(), self.owner.clone(), self.lease);
        }
    }
}

/// Tries to release `owner`'s lease of `address` until the database answers, for at
/// most `lease` seconds (by then the lease expired and another session may take it).
fn release_later(store: Store, address: String, owner: String, lease: u64) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    rt.spawn(async move {
        let until = tokio::time::Instant::now() + Duration::from_secs(lease);
        let mut pause = RELEASE_PAUSE;
        while tokio::time::Instant::now() < until {
            match store.unlock_box(&address, &owner).await {
                Ok(()) => {
                    tracing::info!(r#box = %address, "maildrop lock released");
                    return;
                }
                Err(e) => tracing::debug!(r#box = %address, cause = %e, "maildrop lock release failed"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RELEASE_PAUSE_MAX);
        }
        tracing::warn!(r#box = %address, "maildrop lock not released; it expired by itself");
    });
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.refresher.abort();
        if self.held {
            self.held = false;
            release_later(self.store.clone(), self.address.clone(), self.owner.clone(), self.lease);
        }
    }
}

/// One message of the maildrop as listed at login.
#[derive(Clone, Debug)]
struct Msg {
    id: i64,
    uid: String,
    size: u64,
    deleted: bool,
}

/// Octets of the messages read ahead of the one asked for, at most: a client that
/// retrieves the maildrop in order pays one database round trip per run of messages
/// rather than one per message (issue 16).
const READ_AHEAD_OCTETS: u64 = 256 * 1024;
/// Messages read ahead of the one asked for, at most.
const READ_AHEAD_MESSAGES: usize = 64;

/// The messages of a [`Run`], each with its `mail_id`, as `Store::retrieve_run` answers.
type RunRead = Result<Vec<(i64, Retrieved)>, common::error::StoreError>;

/// The next run, being read while the last message of the one before is sent and the
/// client asks for the next (issue 16: "read ahead while sending"). Dropping it stops
/// the read.
#[derive(Debug)]
struct NextRun {
    /// `mail_id` of its first message: used only if that is the one asked for next.
    first: i64,
    read: tokio_util::task::AbortOnDropHandle<RunRead>,
}

/// The TRANSACTION state's maildrop: fixed at login (RFC 1939 §5).
#[derive(Debug)]
struct Maildrop {
    address: String,
    messages: Vec<Msg>,
    lease: Lease,
    /// Messages read ahead, by `mail_id`, in maildrop order.
    ahead: std::collections::VecDeque<(i64, Retrieved)>,
    /// The run after the messages read ahead, being read.
    next: Option<NextRun>,
}

impl Maildrop {
    fn live(&self) -> impl Iterator<Item = (usize, &Msg)> {
        self.messages.iter().enumerate().filter(|(_, m)| !m.deleted).map(|(i, m)| (i + 1, m))
    }

    fn totals(&self) -> (usize, u64) {
        self.live().fold((0, 0), |(n, o), (_, m)| (n + 1, o + m.size))
    }

    /// The index in `messages` of the message numbered `n` unless out of range or deleted.
    fn index(&self, n: u32) -> Option<usize> {
        let i = usize::try_from(n).ok()?.checked_sub(1)?;
        self.messages.get(i).filter(|m| !m.deleted).map(|_| i)
    }

    /// The message numbered `n` unless out of range or deleted.
    fn get(&self, n: u32) -> Option<&Msg> {
        self.index(n).map(|i| &self.messages[i])
    }

    /// The stored message numbered `n` (present and not deleted): read ahead already, or
    /// read now with the run of messages after it (see [`Maildrop::run_from`]). `None`
    /// if it is no longer stored. What was read ahead of an earlier message is dropped.
    /// Once the messages read ahead are used up, the run after them is read in the
    /// background, so that a client retrieving in order rarely waits for the database.
    async fn retrieve(&mut self, n: u32, store: &Store) -> Result<Option<Retrieved>, common::error::StoreError> {
        let Some(i) = self.index(n) else { return Ok(None) };
        let id = self.messages[i].id;
        let wanted = if let Some(pos) = self.ahead.iter().position(|(a, _)| *a == id) {
            self.ahead.drain(..pos);
            self.ahead.pop_front().map(|(_, r)| r)
        } else {
            self.ahead.clear();
            let read = match self.next.take() {
                // A failed read in the background is tried again here, in the open.
                Some(next) if next.first == id => next.read.await.ok().and_then(Result::ok),
                _ => None,
            };
            let read = match read {
                Some(read) => read,
                None => store.retrieve_run(&self.address, &self.run_from(i)).await?,
            };
            let mut wanted = None;
            for (got, r) in read {
                if got == id {
                    wanted = Some(r);
                } else if got > id && self.messages.binary_search_by_key(&got, |m| m.id).is_ok() {
                    self.ahead.push_back((got, r));
                }
            }
            wanted
        };
        if self.ahead.is_empty() && self.next.is_none() {
            self.read_next(i, store);
        }
        Ok(wanted)
    }

    /// The run that starts with message index `i`: it and the messages after it that are
    /// neither deleted nor beyond [`READ_AHEAD_OCTETS`] and [`READ_AHEAD_MESSAGES`].
    fn run_from(&self, i: usize) -> Run {
        let m = &self.messages[i];
        let mut run = Run { first: m.id, last: m.id, max_size: sql_size(m.size), messages: 1 };
        let mut octets = 0u64;
        for next in self.messages[i + 1..].iter().take(READ_AHEAD_MESSAGES) {
            // A deleted message ends the run: its body would be read for nothing.
            if next.deleted || octets + next.size > READ_AHEAD_OCTETS {
                break;
            }
            octets += next.size;
            run.last = next.id;
            run.max_size = run.max_size.max(sql_size(next.size));
            run.messages += 1;
        }
        run
    }

    /// Starts reading, in the background, the run of the first message after index `i`
    /// that is not deleted, unless that message alone is larger than
    /// [`READ_AHEAD_OCTETS`]: a session never holds two large messages at once.
    fn read_next(&mut self, i: usize, store: &Store) {
        let Some(j) = (i + 1..self.messages.len()).find(|&j| !self.messages[j].deleted) else { return };
        if self.messages[j].size > READ_AHEAD_OCTETS {
            return;
        }
        let run = self.run_from(j);
        let (store, address) = (store.clone(), self.address.clone());
        let read = tokio::spawn(async move { store.retrieve_run(&address, &run).await });
        self.next = Some(NextRun { first: self.messages[j].id, read: tokio_util::task::AbortOnDropHandle::new(read) });
    }
}

fn sql_size(octets: u64) -> i64 {
    i64::try_from(octets).unwrap_or(i64::MAX)
}

#[derive(Debug)]
enum State {
    /// Before login; `sasl` when the next line is an AUTH PLAIN response.
    Authorization { user: Option<String>, sasl: bool },
    /// Logged in.
    Transaction(Maildrop),
}

/// One POP3 session.
#[derive(Debug)]
pub struct Session {
    settings: Arc<Settings>,
    peer: IpAddr,
    tls: bool,
    state: State,
    errors: u32,
    /// The daemon's bans: failed logins count toward them.
    bans: Option<Arc<common::bans::Bans>>,
    /// This session's last failure banned its address: it ends after the reply.
    banned: bool,
}

const NOT_IN_STATE: &str = "Command not valid in this state";
const NO_SUCH_MESSAGE: &str = "No such message";
const SYS_TEMP: &str = "[SYS/TEMP] Temporary failure, try later";
const INVALID_LOGIN: &str = "[AUTH] Invalid login";

/// Maps a login name to a box address (spec/mail.md §4.3): lowercased; used as is with
/// an `@`; else the first `%` stands for `@`; else, with `dot_login`, the first `.`.
pub fn login_address(name: &str, dot_login: bool) -> Option<String> {
    let name = name.trim().to_lowercase();
    let candidate = if name.contains('@') {
        name
    } else if name.contains('%') {
        name.replacen('%', "@", 1)
    } else if dot_login && name.contains('.') {
        name.replacen('.', "@", 1)
    } else {
        return None;
    };
    Address::parse(&candidate, true).ok().map(|a| a.key())
}

impl Session {
    /// A session for a client at `peer`; `tls` on implicit-TLS listeners.
    pub fn new(settings: Arc<Settings>, peer: IpAddr, tls: bool) -> Self {
        Self {
            settings,
            peer,
            tls,
            state: State::Authorization { user: None, sasl: false },
            errors: 0,
            bans: None,
            banned: false,
        }
    }

    /// Counts failed logins toward `bans` (issue 13).
    pub fn with_bans(mut self, bans: Arc<common::bans::Bans>) -> Self {
        self.bans = Some(bans);
        self
    }

    /// `+OK <name> POP3 server ready` (no APOP timestamp: APOP is not offered).
    pub fn greeting(&self) -> Reply {
        Reply::ok(format!("{} POP3 server ready", self.settings.name))
    }

    /// The reply for an input timeout (counted as `failed|timeout|<ip>`); the session
    /// ends without UPDATE.
    pub fn timeout_reply(&self) -> Reply {
        self.settings.stats.failed("timeout", &self.peer.to_string());
        Reply::err("Timeout, closing connection")
    }

    /// The reply when the daemon shuts down; the session ends without UPDATE.
    pub fn shutdown_reply(&self) -> Reply {
        Reply::err(format!("[SYS/TEMP] {} shutting down", self.settings.name))
    }

    /// The longest line the session accepts next (longer for a SASL response).
    pub fn max_line(&self) -> usize {
        match self.state {
            State::Authorization { sasl: true, .. } => MAX_SASL_LINE,
            _ => MAX_COMMAND_LINE,
        }
    }

    /// Whether the client has logged in (the TRANSACTION state, RFC 1939 §3).
    pub fn logged_in(&self) -> bool {
        matches!(self.state, State::Transaction(_))
    }

    /// Seconds of silence allowed before login (`[pop3d] login_timeout`).
    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.login_timeout)
    }

    /// Error replies so far (for the tarpit).
    pub fn errors(&self) -> u32 {
        self.errors
    }

    /// Called after the STLS handshake: nothing from before TLS is kept (RFC 2595 §4).
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.state = State::Authorization { user: None, sasl: false };
    }

    /// The reply to an overlong line.
    pub fn line_too_long(&mut self) -> Outcome {
        if let State::Authorization { sasl, .. } = &mut self.state {
            *sasl = false;
        }
        self.count(Outcome::Reply(Reply::err("Line too long")))
    }

    fn plaintext_ok(&self) -> bool {
        self.tls || self.peer.is_loopback() || self.settings.allow_plaintext_auth
    }

    /// Handles one line (without CRLF).
    pub async fn handle_line(&mut self, line: &[u8], store: &Store) -> Outcome {
        if let State::Transaction(md) = &self.state
            && md.lease.lost()
        {
            // Another session may own the box now: end without touching it.
            return Outcome::Close(Reply::err("[SYS/TEMP] Maildrop lock lost, closing connection"));
        }
        let outcome = if let State::Authorization { sasl: sasl @ true, .. } = &mut self.state {
            *sasl = false;
            // Never logged: the line carries a password.
            Outcome::Reply(self.sasl_plain(line, store).await)
        } else {
            match parse(line) {
                Ok(cmd) => self.dispatch(cmd, store).await,
                Err(SyntaxError::Unknown) => Outcome::Reply(Reply::err("Unknown command")),
                Err(SyntaxError::Arguments) => Outcome::Reply(Reply::err("Syntax error in arguments")),
            }
        };
        self.count(outcome)
    }

    /// Counts error replies toward `max_errors` (then `421`-like close). The refusals not
    /// counted where they happen (a login, a box in use, the server's own failures) are
    /// the client's protocol errors: logged and counted as `failed|protocol|<address>`.
    fn count(&mut self, outcome: Outcome) -> Outcome {
        if self.banned {
            return Outcome::Close(Reply::err("[SYS/TEMP] Too many failures from your address, try again later"));
        }
        if let Outcome::Reply(r) = &outcome
            && !r.ok
        {
            if r.text.starts_with("[SYS/") {
                // Logged with its cause where it happened; counted here, once per reply.
                self.settings.stats.failed("local", &self.peer.to_string());
            } else if !(r.text == INVALID_LOGIN || r.text.starts_with("[IN-USE]")) {
                tracing::info!(peer = %self.peer, reply = %r.text, "refused");
                self.settings.stats.failed("protocol", &self.peer.to_string());
            }
            self.errors += 1;
            if self.errors >= self.settings.max_errors {
                self.settings.stats.failed("limits", &self.peer.to_string());
                return Outcome::Close(Reply::err("Too many errors, closing connection"));
            }
        }
        outcome
    }

    fn capabilities(&self) -> Vec<String> {
        let mut caps: Vec<String> =
            ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"].iter().map(|s| (*s).to_owned()).collect();
        if matches!(self.state, State::Authorization { .. }) {
            if self.plaintext_ok() {
                caps.push("USER".into());
                caps.push("SASL PLAIN".into());
            }
            if self.settings.tls_available && !self.tls {
                caps.push("STLS".into());
            }
        }
        caps.push("IMPLEMENTATION mmpop3d-rs".into());
        caps
    }

    async fn dispatch(&mut self, cmd: Command, store: &Store) -> Outcome {
        use Outcome::Reply as R;
        let plaintext_ok = self.plaintext_ok();
        match (&mut self.state, cmd) {
            (_, Command::Capa) => Outcome::Lines(Reply::ok("Capability list follows"), self.capabilities()),
            (_, Command::Noop) => R(Reply::ok("")),
            (State::Authorization { .. }, Command::Quit) => {
                Outcome::Close(Reply::ok(format!("{} POP3 server signing off", self.settings.name)))
            }
            (State::Transaction(_), Command::Quit) => self.update(store).await,
            (State::Authorization { .. }, Command::Stls) => {
                if !self.settings.tls_available {
                    R(Reply::err("STLS not available"))
                } else if self.tls {
                    R(Reply::err("Already using TLS"))
                } else {
                    Outcome::StartTls(Reply::ok("Begin TLS negotiation"))
                }
            }
            (State::Authorization { .. }, Command::Apop) => R(Reply::err(
                "APOP not supported: passwords are stored as one-way hashes; use USER/PASS or AUTH PLAIN over TLS",
            )),
            (State::Authorization { .. }, Command::User(_) | Command::Pass(_) | Command::Auth { .. })
                if !plaintext_ok =>
            {
                R(Reply::err("[AUTH] TLS required; use STLS or POP3S"))
            }
            (State::Authorization { user, .. }, Command::User(name)) => {
                *user = Some(name);
                R(Reply::ok("Send PASS"))
            }
            (State::Authorization { user, .. }, Command::Pass(password)) => match user.take() {
                None => R(Reply::err("Send USER first")),
                Some(name) => R(self.login(&name, &password, store).await),
            },
            (State::Authorization { .. }, Command::Auth { mechanism: None, .. }) => {
                Outcome::Lines(Reply::ok("Supported SASL mechanisms"), vec!["PLAIN".into()])
            }
            (State::Authorization { sasl, .. }, Command::Auth { mechanism: Some(m), initial }) => {
                if m != "PLAIN" {
                    return R(Reply::err("Unsupported SASL mechanism"));
                }
                match initial {
                    Some(i) => R(self.sasl_plain(i.as_bytes(), store).await),
                    None => {
                        *sasl = true;
                        Outcome::Continue
                    }
                }
            }
            (State::Authorization { .. }, _) => R(Reply::err(NOT_IN_STATE)),
            (State::Transaction(md), cmd) => Self::transaction(md, cmd, store, &self.settings.stats).await,
        }
    }

    /// Commands of the TRANSACTION state (RFC 1939 §5, §7).
    async fn transaction(md: &mut Maildrop, cmd: Command, store: &Store, stats: &Stats) -> Outcome {
        use Outcome::Reply as R;
        match cmd {
            Command::Stat => {
                let (n, octets) = md.totals();
                R(Reply::ok(format!("{n} {octets}")))
            }
            Command::List(None) => {
                let (n, octets) = md.totals();
                let lines = md.live().map(|(i, m)| format!("{i} {}", m.size)).collect();
                Outcome::Lines(Reply::ok(format!("{n} messages ({octets} octets)")), lines)
            }
            Command::List(Some(i)) => match md.get(i) {
                Some(m) => R(Reply::ok(format!("{i} {}", m.size))),
                None => R(Reply::err(NO_SUCH_MESSAGE)),
            },
            Command::Uidl(None) => {
                Outcome::Lines(Reply::ok(""), md.live().map(|(i, m)| format!("{i} {}", m.uid)).collect())
            }
            Command::Uidl(Some(i)) => match md.get(i) {
                Some(m) => R(Reply::ok(format!("{i} {}", m.uid))),
                None => R(Reply::err(NO_SUCH_MESSAGE)),
            },
            Command::Dele(i) => {
                let Some(idx) = usize::try_from(i).ok().and_then(|i| i.checked_sub(1)) else {
                    return R(Reply::err(NO_SUCH_MESSAGE));
                };
                match md.messages.get_mut(idx) {
                    Some(m) if m.deleted => R(Reply::err(format!("Message {i} already deleted"))),
                    Some(m) => {
                        m.deleted = true;
                        R(Reply::ok(format!("Message {i} deleted")))
                    }
                    None => R(Reply::err(NO_SUCH_MESSAGE)),
                }
            }
            Command::Rset => {
                md.messages.iter_mut().for_each(|m| m.deleted = false);
                let (n, octets) = md.totals();
                R(Reply::ok(format!("Maildrop has {n} messages ({octets} octets)")))
            }
            Command::Retr(i) | Command::Top(i, _) => match md.retrieve(i, store).await {
                Ok(Some(r)) => {
                    let (status, len) = match cmd {
                        Command::Top(_, n) => (Reply::ok(""), top_len(&r.body, n)),
                        _ => {
                            count_out(stats, &md.address, r.len());
                            (Reply::ok(format!("{} octets", r.len())), r.body.len())
                        }
                    };
                    Outcome::Message(status, r, len)
                }
                Ok(None) => R(Reply::err(NO_SUCH_MESSAGE)),
                Err(e) => {
                    tracing::error!(cause = %e, "retrieve failed");
                    R(Reply::err(SYS_TEMP))
                }
            },
            Command::Stls => R(Reply::err(NOT_IN_STATE)),
            _ => R(Reply::err(NOT_IN_STATE)),
        }
    }

    /// The UPDATE state (RFC 1939 §6): commit the deletions and release the lock in one
    /// transaction, only while this session's lease holds; sign off.
    async fn update(&mut self, store: &Store) -> Outcome {
        let State::Transaction(mut md) =
            std::mem::replace(&mut self.state, State::Authorization { user: None, sasl: false })
        else {
            return Outcome::Close(Reply::ok(format!("{} POP3 server signing off", self.settings.name)));
        };
        // A run still being read is not wanted any more.
        md.next = None;
        let ids: Vec<i64> = md.messages.iter().filter(|m| m.deleted).map(|m| m.id).collect();
        match store.commit_deletions(&md.address, &md.lease.owner, &ids).await {
            Ok(Update::Deleted(n)) => {
                md.lease.released_with_commit();
                tracing::info!(r#box = %md.address, deleted = n, "signed off");
                if n > 0 {
                    let n = i64::try_from(n).unwrap_or(i64::MAX);
                    self.settings
                        .stats
                        .batch()
                        .update(Flag::Persistent, &["mailbox", &md.address, "messages-deleted"], n)
                        .update(Flag::Persistent, &["total", "messages-deleted"], n)
                        .send();
                }
                Outcome::Close(Reply::ok(format!(
                    "{} POP3 server signing off ({n} messages deleted)",
                    self.settings.name
                )))
            }
            Ok(Update::LockLost) => {
                // Not ours to release: another session may hold the box now.
                md.lease.released_with_commit();
                if ids.is_empty() {
                    tracing::info!(r#box = %md.address, "signed off (maildrop lock had expired)");
                    return Outcome::Close(Reply::ok(format!("{} POP3 server signing off", self.settings.name)));
                }
                tracing::warn!(r#box = %md.address, marked = ids.len(), "maildrop lock lost before QUIT; nothing deleted");
                Outcome::Close(Reply::err("[SYS/TEMP] Maildrop lock lost, nothing deleted"))
            }
            Err(e) => {
                tracing::error!(r#box = %md.address, cause = %e, "deletions not committed");
                md.lease.release().await;
                Outcome::Close(Reply::err("[SYS/TEMP] Some deleted messages not removed"))
            }
        }
    }

    /// The session is over (whatever ended it): releases a maildrop lock it still holds,
    /// waiting for the first attempt (later ones run in the background).
    pub async fn end(&mut self) {
        if let State::Transaction(md) =
            std::mem::replace(&mut self.state, State::Authorization { user: None, sasl: false })
        {
            md.lease.release().await;
        }
    }

    /// AUTH PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`, base64 (RFC 5034 §4:
    /// `=` is an empty response, `*` cancels).
    async fn sasl_plain(&mut self, response: &[u8], store: &Store) -> Reply {
        let response = String::from_utf8_lossy(response);
        let response = response.trim();
        if response == "*" {
            return Reply::err("Authentication cancelled");
        }
        let decoded = if response == "=" { Ok(Vec::new()) } else { BASE64.decode(response) };
        let Ok(decoded) = decoded else {
            return Reply::err("[AUTH] Invalid base64 in AUTH response");
        };
        let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
        let [authzid, authcid, passwd] = parts.as_slice() else {
            return Reply::err("[AUTH] Malformed PLAIN response");
        };
        let (Ok(authzid), Ok(authcid), Ok(passwd)) =
            (std::str::from_utf8(authzid), std::str::from_utf8(authcid), std::str::from_utf8(passwd))
        else {
            return Reply::err("[AUTH] Malformed PLAIN response");
        };
        if !authzid.is_empty() && authzid != authcid {
            // Acting as another user is not supported.
            return Reply::err(INVALID_LOGIN);
        }
        self.login(authcid, passwd, store).await
    }

    /// Verifies a login and enters the TRANSACTION state. Every failure takes one
    /// password verification's time, so names, passwords and locks are not told apart
    /// by timing (spec/mail.md §4.3, §4.4).
    async fn login(&mut self, name: &str, password: &str, store: &Store) -> Reply {
        let address = login_address(name, self.settings.dot_login);
        let owner = match &address {
            Some(a) => match store.box_owner(a).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(cause = %e, "login lookup failed");
                    return Reply::err(SYS_TEMP);
                }
            },
            None => None,
        };
        let key = common::net::gate::address_key(self.peer, self.settings.ipv6_prefix);
        let verdict = self.verify(key, password, owner.as_ref()).await;
        let (Some(address), Some(owner), true) = (address, owner, verdict.ok()) else {
            let recent = self.settings.logins.failed(key);
            tracing::info!(peer = %self.peer, login = ?name, recent, "login failed");
            self.settings.stats.failed("login", &self.peer.to_string());
            if let Some(bans) = &self.bans {
                self.banned = bans.strike(self.peer, common::bans::Cause::Login);
            }
            // The tarpit of this address grows with its recent failures (issue 13); it
            // holds this connection, not a verification slot.
            tokio::time::sleep(self.settings.logins.tarpit(key)).await;
            return Reply::err(INVALID_LOGIN);
        };
        let lease_owner = common::random_hex(16);
        match store.lock_box(&address, &lease_owner, self.settings.lock_lease).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(peer = %self.peer, r#box = %address, "maildrop in use");
                self.settings.stats.failed("inuse", &address);
                return Reply::err("[IN-USE] Mailbox already in use");
            }
            Err(e) => {
                tracing::error!(cause = %e, "maildrop lock failed");
                return Reply::err(SYS_TEMP);
            }
        }
        let lease = Lease::start(store, &address, lease_owner, self.settings.lock_lease);
        let list = match store.maildrop(&address).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(cause = %e, "maildrop listing failed");
                lease.release().await;
                return Reply::err(SYS_TEMP);
            }
        };
        if verdict == Verified::NeedsRehash && self.settings.rehash_legacy {
            self.rehash(&owner, password, store).await;
        }
        let messages: Vec<Msg> = list
            .into_iter()
            .map(|m| Msg { id: m.id, uid: m.uid, size: u64::try_from(m.size).unwrap_or(0), deleted: false })
            .collect();
        let md = Maildrop { address, messages, lease, ahead: Default::default(), next: None };
        let (n, octets) = md.totals();
        tracing::info!(r#box = %md.address, messages = n, "logged in");
        self.settings
            .stats
            .batch()
            .update(Flag::Persistent, &["mailbox", &md.address, "logins"], 1)
            .update(Flag::Persistent, &["total", "logins"], 1)
            .send();
        self.state = State::Transaction(md);
        Reply::ok(format!("{n} messages ({octets} octets)"))
    }

    /// Checks `password` in this address's fair turn (`common::guard`), spending an
    /// Argon2id verification's time whatever the outcome.
    async fn verify(&self, key: IpAddr, password: &str, owner: Option<&BoxOwner>) -> Verified {
        let _turn = self.settings.logins.turn(key).await;
        let password = password.as_bytes().to_vec();
        let stored = owner.map(|o| o.passwd.clone());
        tokio::task::spawn_blocking(move || match stored {
            Some(stored) => {
                let v = password::verify(&password, &stored);
                if !stored.starts_with("$argon2") {
                    // Legacy MD5 is fast: spend an Argon2 verification's time anyway.
                    password::dummy_verify(&password);
                }
                v
            }
            None => password::dummy_verify(&password),
        })
        .await
        .unwrap_or(Verified::No)
    }

    async fn rehash(&self, owner: &BoxOwner, password: &str, store: &Store) {
        let pw = password.as_bytes().to_vec();
        let Ok(Ok(new)) = tokio::task::spawn_blocking(move || password::hash(&pw)).await else {
            tracing::warn!(user = %owner.user_name, "re-hash failed");
            return;
        };
        match store.replace_password(owner.user_id, &owner.passwd, &new).await {
            Ok(true) => tracing::info!(user = %owner.user_name, "legacy MD5 password replaced by Argon2id"),
            Ok(false) => {}
            Err(e) => tracing::warn!(user = %owner.user_name, cause = %e, "re-hash not stored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::login_address;

    #[test]
    fn login_names() {
        let cases = [
            ("mmondor@example.org", true, Some("mmondor@example.org")),
            ("MMondor@Example.ORG", true, Some("mmondor@example.org")),
            ("mmondor.example.org", true, Some("mmondor@example.org")),
            ("mm_ondor.mail.example.org", true, Some("mm_ondor@mail.example.org")),
            ("mmondor%example.org", true, Some("mmondor@example.org")),
            ("mmondor.example.org", false, None),
            ("mmondor", true, None),
            ("", true, None),
            ("a@@b", true, None),
        ];
        for (name, dot, want) in cases {
            assert_eq!(login_address(name, dot).as_deref(), want, "{name}");
        }
    }
}
