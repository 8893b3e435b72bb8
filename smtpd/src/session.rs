//! One SMTP session as a state machine that never touches a socket (style.md P1, P2):
//! the connection loop feeds it commands and DATA results, it returns replies.
//!
//! RFC 5321 §4.1 (commands and their order), §4.4 (trace fields), §4.5.3 (limits);
//! RFC 3207 (STARTTLS: forget everything learnt before TLS); mmmail's mail rules from
//! design.md (recipient resolution, box limits, `nofrom`).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::address::Address;
use common::stats::{Flag, Stats};
use common::store::{DeliverError, Delivery, MailCopy, Resolution, Store};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use crate::checks::{Checker, Client, Verdict};
use crate::config::{Config, NullSender, SmtpdConfig};
use crate::flood::Flood;
use crate::proto::command::{Command, ForwardPath, MailParams, SyntaxError, parse};
use crate::proto::data::{ChunkReceiver, DataLimits, Received};
use crate::proto::reply::{Reply, texts};
use crate::spool::Spool;

/// What the connection loop must do after a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send the reply, read the next command.
    Reply(Reply),
    /// Send the reply, close the connection.
    Close(Reply),
    /// Send the reply, discard buffered input, run the TLS handshake, call
    /// [`Session::tls_started`], and go on.
    StartTls(Reply),
    /// Send the `354` reply, read the message with a
    /// [`DataReceiver`](crate::proto::data::DataReceiver) using [`Session::data_limits`],
    /// then call [`Session::data_end`].
    Data(Reply),
    /// `BDAT` (RFC 3030): read exactly this many octets, hand them to
    /// [`Session::chunk_data`], then call [`Session::chunk_end`] for the reply. The
    /// octets are read even when the command is refused, so that none of them is ever
    /// taken for a command.
    Chunk(u64),
}

/// The settings a session needs, derived once from the config.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `[server] name`.
    pub name: String,
    /// `[smtpd]` section.
    pub smtpd: crate::config::SmtpdConfig,
    /// `[limits] max_errors`.
    pub max_errors: u32,
    /// The postmaster box.
    pub postmaster: Address,
    /// Whether STARTTLS can be offered (a `[tls]` section exists).
    pub tls_available: bool,
    /// `[limits] ipv6_prefix`: how client addresses are grouped for the flood limit.
    pub ipv6_prefix: u8,
    /// The daemon's flood table.
    pub flood: Arc<Flood>,
    /// Where counters go (spec/mail.md §3.10).
    pub stats: Stats,
    /// Reverse DNS, SPF, DKIM, DMARC, ARC, DNS lists and greylisting (issue 14); `None`
    /// when all are off.
    pub checker: Option<Arc<Checker>>,
    /// Permits to read a spooled message back into memory (`[smtpd] spool_loads`).
    pub loads: Arc<tokio::sync::Semaphore>,
    /// Octets that messages past `spool_threshold` hold in memory now, together (within
    /// `[smtpd] spool_memory`).
    pub held: Arc<AtomicUsize>,
}

/// What the daemon keeps across reloads (SIGHUP) because sessions started before one
/// still count in it: the flood table, the octets messages past `spool_threshold` hold
/// in memory (`[smtpd] spool_memory` is one allowance for the daemon, not one per
/// configuration), and the permits to read spooled messages back (`spool_loads`).
#[derive(Debug)]
pub struct Kept {
    /// The flood table.
    pub flood: Arc<Flood>,
    /// Octets held in memory by messages past `spool_threshold`, together.
    pub held: Arc<AtomicUsize>,
    /// Permits to read a spooled message back into memory.
    pub loads: Arc<tokio::sync::Semaphore>,
    /// How many permits `loads` stands for (`spool_loads`, at least 1).
    loads_size: AtomicUsize,
}

impl Kept {
    /// Fresh tables for a daemon starting with `own`.
    pub fn new(own: &SmtpdConfig) -> Self {
        let size = own.spool_loads.max(1);
        Self {
            flood: Arc::new(Flood::new(own)),
            held: Arc::new(AtomicUsize::new(0)),
            loads: Arc::new(tokio::sync::Semaphore::new(size)),
            loads_size: AtomicUsize::new(size),
        }
    }

    /// Takes new settings: the flood limits (counts so far are kept) and the number of
    /// read-back permits. Fewer permits than are taken now: the free ones go at once, the
    /// rest as their sessions give them back (outside a runtime: only the free ones).
    pub fn update(&self, own: &SmtpdConfig) {
        self.flood.update(own);
        let want = own.spool_loads.max(1);
        let had = self.loads_size.swap(want, Ordering::Relaxed);
        if want > had {
            self.loads.add_permits(want - had);
        } else if want < had {
            let debt = (had - want) - self.loads.forget_permits(had - want);
            if debt > 0
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
                && let Ok(debt) = u32::try_from(debt)
            {
                let loads = self.loads.clone();
                runtime.spawn(async move {
                    if let Ok(permits) = loads.acquire_many_owned(debt).await {
                        permits.forget();
                    }
                });
            }
        }
    }
}

impl Settings {
    /// Derives the settings from a validated config, with fresh [`Kept`] tables and a
    /// stats client of its own.
    ///
    /// # Errors
    /// The DNS resolver of the checks cannot be set up.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Self> {
        Self::with_kept(cfg, &Kept::new(&cfg.own), Stats::open(&cfg.stats, "mmsmtpd"))
    }

    /// Derives the settings from a validated config, sharing `kept` (which takes the
    /// config's flood limits and `spool_loads`) and counting with `stats`.
    ///
    /// # Errors
    /// The DNS resolver of the checks cannot be set up (`[dns]`).
    pub fn with_kept(cfg: &Config, kept: &Kept, stats: Stats) -> anyhow::Result<Self> {
        kept.update(&cfg.own);
        let checker = Checker::new(&cfg.server.name, cfg.own.dmarc_reject, &cfg.extra)?;
        Ok(Self {
            name: cfg.server.name.clone(),
            smtpd: cfg.own.clone(),
            max_errors: cfg.limits.max_errors,
            postmaster: cfg
                .own
                .postmaster(&cfg.server.name)
                .unwrap_or_else(|| Address::parse("postmaster@localhost", false).expect("constant mailbox")),
            tls_available: cfg.tls.is_some(),
            ipv6_prefix: cfg.limits.ipv6_prefix,
            flood: kept.flood.clone(),
            stats,
            checker,
            loads: kept.loads.clone(),
            held: kept.held.clone(),
        })
    }
}

/// The client's greeting.
#[derive(Clone, Debug)]
struct Helo {
    name: String,
    extended: bool,
}

/// One accepted RCPT: the forward-path as given and the boxes it reaches.
#[derive(Clone, Debug)]
struct Recipient {
    forward_path: String,
    boxes: Vec<String>,
}

/// A mail transaction in progress (after MAIL).
#[derive(Debug)]
struct Transaction {
    id: String,
    from: Option<Address>,
    params: MailParams,
    rcpts: Vec<Recipient>,
    /// The message so far, once a BDAT began it.
    chunks: Option<ChunkReceiver>,
    /// BDAT carried the message (for the log).
    chunked: bool,
    /// The message's octets past `spool_threshold` (issue 16).
    spool: Spooled,
}

/// A transaction's spool, and whether writing it failed.
#[derive(Debug, Default)]
struct Spooled {
    file: Spool,
    /// Spooling failed: the message is refused with a temporary error at its end.
    failed: bool,
    /// What the message holds in memory past `spool_threshold`, counted in
    /// [`Settings::held`] until the transaction ends.
    charge: Charge,
}

/// A message stays in memory past `spool_threshold` only while it holds at most this
/// fraction of `spool_memory` (1 MiB of the default 32 MiB): the allowance is for the
/// many messages of a few hundred KiB, and a message of several MiB, stored with a
/// copy or two of itself at its commit, goes to the spool and takes its turn among
/// `spool_loads` as before.
const SPOOL_MEMORY_SHARE: usize = 32;

/// Octets of one message counted in a daemon-wide total ([`Settings::held`]); given
/// back when dropped.
#[derive(Debug, Default)]
struct Charge {
    total: Option<Arc<AtomicUsize>>,
    octets: usize,
}

impl Charge {
    /// Counts the message at `octets` in `total` if the total stays within `limit`;
    /// whether it did (if not, nothing changes).
    fn grow(&mut self, total: &Arc<AtomicUsize>, limit: usize, octets: usize) -> bool {
        let more = octets.saturating_sub(self.octets);
        let fits = total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| now.checked_add(more).filter(|n| *n <= limit))
            .is_ok();
        if fits {
            self.total.get_or_insert_with(|| total.clone());
            self.octets = self.octets.max(octets);
        }
        fits
    }

    /// Gives the counted octets back.
    fn release(&mut self) {
        if let Some(total) = &self.total {
            total.fetch_sub(std::mem::take(&mut self.octets), Ordering::AcqRel);
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.release();
    }
}

impl Spooled {
    /// Where a message holding `held` in memory waits (issue 16): below
    /// `spool_threshold`, in memory; past it, in memory while it holds at most
    /// 1/[`SPOOL_MEMORY_SHARE`] of `spool_memory` and the daemon's messages past the
    /// threshold fit in `spool_memory` together, else (and from then on) in the spool
    /// file. Whether `held` went to the spool (or was dropped because spooling failed):
    /// the caller then forgets it.
    async fn spill(&mut self, id: &str, settings: &Settings, held: &[u8]) -> bool {
        let own = &settings.smtpd;
        if own.spool_threshold == 0 || held.len() < own.spool_threshold {
            return false;
        }
        if self.failed {
            return true;
        }
        if self.file.is_empty()
            && held.len() <= own.spool_memory / SPOOL_MEMORY_SHARE
            && self.charge.grow(&settings.held, own.spool_memory, held.len())
        {
            return false;
        }
        self.charge.release();
        self.push(id, &own.spool_dir, held).await;
        true
    }

    /// Appends `octets` to the spool file in `dir`; a failure is logged once (for
    /// transaction `id`) and marks the message for a temporary error at its end.
    async fn push(&mut self, id: &str, dir: &str, octets: &[u8]) {
        if self.failed {
            return;
        }
        if let Err(e) = self.file.push(dir, octets).await {
            tracing::error!(id, cause = %e, dir, "cannot spool the message; it will be refused");
            self.failed = true;
        }
    }
}

/// The BDAT whose octets are being read.
#[derive(Debug)]
struct PendingChunk {
    size: u64,
    last: bool,
    /// The reply when the chunk is refused (its octets are read and dropped).
    refusal: Option<Reply>,
}

/// Where the session stands (RFC 5321 §4.1.4).
#[derive(Debug)]
enum State {
    /// No transaction: before or between transactions.
    Idle,
    /// After MAIL, collecting RCPTs; DATA when at least one was accepted.
    Mail(Box<Transaction>),
}

/// One SMTP session.
#[derive(Debug)]
pub struct Session {
    settings: Arc<Settings>,
    peer: IpAddr,
    tls: bool,
    helo: Option<Helo>,
    state: State,
    errors: u32,
    /// RCPTs refused as unknown or not local, this session.
    unknown: usize,
    /// The unknown-recipient limit was reached during a transaction with accepted
    /// recipients: the session ends once that transaction is over.
    close_after: bool,
    /// The BDAT being read.
    chunk: Option<PendingChunk>,
    /// The daemon's bans: unknown recipients count toward them.
    bans: Option<Arc<common::bans::Bans>>,
    /// The checks of this client (issue 14); `None` when off or the client is exempt.
    checks: Option<Client>,
    /// The last error reply was a policy refusal, logged and counted where decided: it
    /// is not a protocol error and does not count toward `max_errors`.
    decided: bool,
}

/// 16 lowercase hex digits from the OS random source: transaction ids (spec/mail.md §3.7).
pub fn random_id() -> String {
    common::random_hex(8)
}

/// Error replies that do not count toward `max_errors`: a full box, a local failure, `452
/// 4.5.3` (RFC 5321 §4.5.3.1.10) and unknown recipients (limited on their own).
const NOT_THE_CLIENTS_MISTAKE: [(u16, &str); 5] =
    [texts::TOO_MANY_RCPTS, texts::MAILBOX_FULL, texts::LOCAL_ERROR, texts::USER_UNKNOWN, texts::RELAY_DENIED];

/// Refusals logged and counted under their own cause where they are decided; every other
/// error reply is counted as `failed|protocol`.
const COUNTED_WHERE_DECIDED: [(u16, &str); 12] = [
    texts::TOO_MANY_RCPTS,
    texts::MAILBOX_FULL,
    texts::TOO_BIG_FOR_BOX,
    texts::LOCAL_ERROR,
    texts::USER_UNKNOWN,
    texts::RELAY_DENIED,
    texts::SIZE_TOO_BIG,
    texts::TOO_BIG,
    texts::TOO_MANY_HOPS,
    texts::FLOOD,
    texts::NULL_SENDER_REFUSED,
    texts::BARE_CR_LF,
];

impl Session {
    /// A session for a client at `peer`; `tls` is true on implicit-TLS listeners.
    pub fn new(settings: Arc<Settings>, peer: IpAddr, tls: bool) -> Self {
        let checks = settings.checker.as_ref().and_then(|c| c.start(peer));
        Self {
            settings,
            peer,
            tls,
            helo: None,
            state: State::Idle,
            errors: 0,
            unknown: 0,
            close_after: false,
            chunk: None,
            bans: None,
            checks,
            decided: false,
        }
    }

    /// Counts unknown recipients toward `bans` (issue 13).
    pub fn with_bans(mut self, bans: Arc<common::bans::Bans>) -> Self {
        self.bans = Some(bans);
        self
    }

    fn name(&self) -> &str {
        &self.settings.name
    }

    /// The `220` greeting.
    pub fn greeting(&self) -> Reply {
        Reply::new(220, format!("{} ESMTP mmsmtpd-rs ready", self.name()))
    }

    /// What the client gets first: the greeting, or (`Outcome::Close`) a refusal when a
    /// DNS block list with `stage = "connect"` lists it (issue 14).
    pub async fn open(&mut self) -> Outcome {
        let name = self.settings.name.clone();
        let Some(c) = self.checks.as_mut() else { return Outcome::Reply(self.greeting()) };
        let listed = c.list_results().await;
        let refusal = c.at_connect(&name).await;
        for (zone, result) in &listed {
            tracing::info!(peer = %self.peer, %zone, result, "DNS list");
        }
        let verdicts: Vec<(&str, &str)> = listed.iter().map(|(_, result)| ("dnsbl", *result)).collect();
        self.count_checks(&verdicts);
        if let Some(refusal) = refusal {
            tracing::info!(peer = %self.peer, reply = %refusal, "refused");
            self.count_check("dnsbl", "refused");
            self.failed("dnsbl");
            return Outcome::Close(refusal);
        }
        Outcome::Reply(self.greeting())
    }

    /// `mmsmtpd|checks|<check>|<result>` and `mmsmtpd|checks|<check>|total`, +1 each.
    fn count_check(&self, check: &str, result: &str) {
        self.count_checks(&[(check, result)]);
    }

    /// [`count_check`](Self::count_check) for each of `verdicts`, in one datagram.
    fn count_checks(&self, verdicts: &[(&str, &str)]) {
        let mut b = self.settings.stats.batch();
        for (check, result) in verdicts {
            b.update(Flag::Persistent, &["checks", check, result], 1);
            b.update(Flag::Persistent, &["checks", check, "total"], 1);
        }
        b.send();
    }

    /// A policy refusal (issue 14): logged, counted as `failed|policy|<ip>`, and not
    /// counted as the client's protocol error.
    fn refuse(&mut self, check: &str, reply: Reply) -> Reply {
        tracing::info!(peer = %self.peer, check, reply = %reply, "refused");
        self.failed("policy");
        self.decided = true;
        reply
    }

    /// `421` for an input or session timeout (counted as `failed|timeout|<ip>`).
    pub fn timeout_reply(&self) -> Reply {
        self.failed("timeout");
        Reply::new(421, format!("4.4.2 {} Timeout, closing connection", self.name()))
    }

    /// `421` when the daemon is shutting down.
    pub fn shutdown_reply(&self) -> Reply {
        Reply::new(421, format!("4.3.2 {} Service shutting down", self.name()))
    }

    /// The limits for the message after a [`Outcome::Data`]: a `max_message_lines` of 0
    /// means no line limit of its own (every line is at least CRLF, so the size limit
    /// bounds the lines, and a message within the advertised SIZE is never refused for
    /// its line count, RFC 1870).
    pub fn data_limits(&self) -> DataLimits {
        let lines = match self.settings.smtpd.max_message_lines {
            0 => usize::MAX,
            n => n,
        };
        DataLimits { max_size: self.settings.smtpd.max_message_size, max_lines: lines }
    }

    /// Error replies sent so far (for the tarpit delay).
    pub fn errors(&self) -> u32 {
        self.errors
    }

    /// Counts a refusal of kind `cause` against the client's address.
    fn failed(&self, cause: &str) {
        self.settings.stats.failed(cause, &self.peer.to_string());
    }

    /// Whether the client is in `[smtpd] flood_exempt`.
    fn flood_exempt(&self) -> bool {
        self.settings.smtpd.flood_exempt.iter().any(|n| n.contains(&self.peer))
    }

    fn flood_key(&self) -> IpAddr {
        common::net::gate::address_key(self.peer, self.settings.ipv6_prefix)
    }

    /// Called after a STARTTLS handshake: RFC 3207 §4.2, the client must greet again and
    /// nothing learnt before TLS is kept.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.helo = None;
        self.state = State::Idle;
    }

    /// A command line over [`MAX_COMMAND_LINE`](crate::proto::command::MAX_COMMAND_LINE).
    pub fn line_too_long(&mut self) -> Outcome {
        self.count(Outcome::Reply(texts::LINE_TOO_LONG.into()))
    }

    /// Parses and handles one command line (without CRLF).
    pub async fn handle_line(&mut self, line: &[u8], store: &Store) -> Outcome {
        if self.close_after && matches!(self.state, State::Idle) {
            return Outcome::Close(self.too_many_unknown());
        }
        let outcome = match parse(line) {
            Ok(cmd) => self.dispatch(cmd, store).await,
            // The chunk's octets follow, and their count is unknown: nothing after this
            // line can be told from a command.
            Err(SyntaxError::Bdat) => return Outcome::Close(texts::BDAT_SYNTAX.into()),
            Err(e) => Outcome::Reply(syntax_reply(e)),
        };
        self.count(outcome)
    }

    fn too_many_unknown(&self) -> Reply {
        self.failed("limits");
        Reply::new(421, format!("4.7.0 {} Too many unknown recipients, closing connection", self.name()))
    }

    /// Counts error replies; at `max_errors` the session ends with `421`. Replies that
    /// are not the client's mistake do not count: a full box, a local failure, and `452
    /// 4.5.3` for too many recipients (RFC 5321 §4.5.3.1.10: how a client learns to split
    /// the transaction). Unknown recipients have their own limit (see `rcpt`).
    fn count(&mut self, outcome: Outcome) -> Outcome {
        let Outcome::Reply(r) = &outcome else { return outcome };
        if !r.is_error() || std::mem::take(&mut self.decided) {
            return outcome;
        }
        if r.is(texts::LOCAL_ERROR.0, texts::LOCAL_ERROR.1) {
            // Logged with its cause where it happened; counted here, once per reply.
            self.failed("local");
        } else if !COUNTED_WHERE_DECIDED.iter().any(|(code, text)| r.is(*code, text)) {
            // A protocol error of the client's (syntax, sequence, SMTPUTF8 needed): the
            // other refusals are logged and counted where they are decided.
            tracing::info!(peer = %self.peer, reply = %r, "refused");
            self.failed("protocol");
        }
        if !NOT_THE_CLIENTS_MISTAKE.iter().any(|(code, text)| r.is(*code, text)) {
            self.errors += 1;
            if self.errors >= self.settings.max_errors {
                self.failed("limits");
                let bye = Reply::new(421, format!("4.7.0 {} Too many errors, closing connection", self.name()));
                return Outcome::Close(bye);
            }
        }
        outcome
    }

    async fn dispatch(&mut self, cmd: Command, store: &Store) -> Outcome {
        use Outcome::Reply as R;
        match (&mut self.state, cmd) {
            (_, Command::Helo(name)) => R(self.greet(name, false)),
            (_, Command::Ehlo(name)) => R(self.greet(name, true)),
            (_, Command::Quit) => Outcome::Close(Reply::new(221, format!("2.0.0 {} closing connection", self.name()))),
            (_, Command::Rset) => {
                self.state = State::Idle;
                R(texts::OK.into())
            }
            (_, Command::Noop) => R(texts::OK.into()),
            (_, Command::Help) => R(Reply::multi(
                214,
                vec![
                    "2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY EXPN STARTTLS".into(),
                    "2.0.0 End of HELP".into(),
                ],
            )),
            (_, Command::Vrfy) => R(texts::CANNOT_VRFY.into()),
            (_, Command::Expn) => R(texts::NOT_IMPLEMENTED.into()),
            (_, Command::StartTls) if !self.settings.tls_available => R(texts::NOT_IMPLEMENTED.into()),
            (_, Command::StartTls) if self.tls => R(texts::TLS_ACTIVE.into()),
            (_, Command::StartTls) => {
                self.state = State::Idle;
                Outcome::StartTls(texts::READY_TLS.into())
            }
            (State::Mail(_), Command::Mail { .. }) => R(texts::SENDER_ALREADY.into()),
            (State::Idle, Command::Mail { from, params }) => R(self.mail(from, params, store).await),
            (State::Idle, Command::Rcpt(_)) => R(texts::NEED_MAIL.into()),
            (State::Mail(_), Command::Rcpt(to)) => self.rcpt(to, store).await,
            (_, Command::Bdat { size, last }) => self.bdat(size, last),
            (State::Mail(tx), Command::Data) if tx.chunks.is_some() => R(texts::DATA_AFTER_BDAT.into()),
            (State::Mail(tx), Command::Data) if !tx.rcpts.is_empty() => Outcome::Data(texts::START_DATA.into()),
            (State::Idle, Command::Data) => R(texts::NEED_MAIL.into()),
            (State::Mail(_), Command::Data) => R(texts::NEED_RCPT.into()),
        }
    }

    fn greet(&mut self, name: String, extended: bool) -> Reply {
        self.state = State::Idle;
        let first = format!("{} Hello {} [{}]", self.name(), name, self.peer);
        self.helo = Some(Helo { name, extended });
        if !extended {
            return Reply::new(250, first);
        }
        let mut lines = vec![
            first,
            format!("SIZE {}", self.settings.smtpd.max_message_size),
            "8BITMIME".into(),
            "PIPELINING".into(),
            "ENHANCEDSTATUSCODES".into(),
            "SMTPUTF8".into(),
            "CHUNKING".into(),
        ];
        if self.settings.tls_available && !self.tls {
            lines.push("STARTTLS".into());
        }
        Reply::multi(250, lines)
    }

    async fn mail(&mut self, from: Option<Address>, params: MailParams, store: &Store) -> Reply {
        if self.settings.smtpd.require_helo && self.helo.is_none() {
            return texts::SEND_HELO_FIRST.into();
        }
        if params.given && !self.helo.as_ref().is_some_and(|h| h.extended) {
            return texts::PARAMS_NEED_EHLO.into();
        }
        if params.size > self.settings.smtpd.max_message_size as u64 {
            self.failed("size");
            return texts::SIZE_TOO_BIG.into();
        }
        if !self.flood_exempt() && self.settings.flood.exceeded(self.flood_key()) {
            tracing::info!(peer = %self.peer, "flood limit reached");
            self.failed("flood");
            return texts::FLOOD.into();
        }
        if from.is_none() && self.settings.smtpd.null_sender == NullSender::Nofrom {
            let ip = self.peer.to_string();
            let host = match self.checks.as_mut() {
                Some(c) if self.settings.smtpd.resolve_hosts => c.host_name().await,
                _ => None,
            };
            let names: Vec<&str> = std::iter::once(ip.as_str()).chain(host.as_deref()).collect();
            match store.nofrom_allows(&names).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(peer = %self.peer, "null sender refused (nofrom)");
                    self.failed("nofrom");
                    return texts::NULL_SENDER_REFUSED.into();
                }
                Err(e) => {
                    tracing::error!(cause = %e, "nofrom lookup failed");
                    return texts::LOCAL_ERROR.into();
                }
            }
        }
        if let Some(c) = self.checks.as_mut() {
            let helo = self.helo.as_ref().map_or("", |h| h.name.as_str());
            if let Some(refusal) = c.at_mail(helo, from.as_ref()).await {
                return self.refuse("mail", refusal);
            }
        }
        self.state = State::Mail(Box::new(Transaction {
            id: random_id(),
            from,
            params,
            rcpts: Vec::new(),
            chunks: None,
            chunked: false,
            spool: Spooled::default(),
        }));
        texts::SENDER_OK.into()
    }

    async fn rcpt(&mut self, to: ForwardPath, store: &Store) -> Outcome {
        use Outcome::Reply as R;
        let State::Mail(tx) = &mut self.state else {
            return R(texts::NEED_MAIL.into());
        };
        if tx.rcpts.len() >= self.settings.smtpd.max_recipients {
            tracing::info!(peer = %self.peer, max = self.settings.smtpd.max_recipients, "too many recipients");
            self.settings.stats.failed("limits", &self.peer.to_string());
            return R(texts::TOO_MANY_RCPTS.into());
        }
        let (address, bare_postmaster) = match to {
            ForwardPath::Address(a) => (a, false),
            ForwardPath::Postmaster => (self.settings.postmaster.clone(), true),
        };
        // RFC 5321 §4.5.1: a listed client can still reach postmaster.
        let postmaster = bare_postmaster || address.key().starts_with("postmaster@");
        if !postmaster
            && let Some(c) = self.checks.as_mut()
            && let Some(refusal) = c.at_rcpt().await
        {
            self.count_check("dnsbl", "refused");
            return R(self.refuse("dnsbl", refusal));
        }
        if !address.to_string().is_ascii() && !tx.params.smtputf8 {
            return R(texts::NEED_SMTPUTF8.into());
        }
        let mut resolution = match store.resolve(&address).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(cause = %e, "recipient lookup failed");
                return R(texts::LOCAL_ERROR.into());
            }
        };
        // RFC 5321 §4.5.1: postmaster at every served domain reaches the postmaster box
        // when no box or alias of its own does.
        if resolution == Resolution::UnknownUser && address.key().starts_with("postmaster@") && !bare_postmaster {
            match store.resolve(&self.settings.postmaster).await {
                Ok(r @ Resolution::Boxes(_)) => resolution = r,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(cause = %e, "recipient lookup failed");
                    return R(texts::LOCAL_ERROR.into());
                }
            }
        }
        let State::Mail(tx) = &mut self.state else {
            return R(texts::NEED_MAIL.into());
        };
        let refusal: Reply = match resolution {
            Resolution::Boxes(boxes) => {
                let (room, full): (Vec<_>, Vec<_>) = boxes.into_iter().partition(|b| !b.is_full(tx.params.size));
                for b in &full {
                    tracing::info!(r#box = %b.address, "box full");
                    self.settings.stats.failed("full", &b.address.to_string());
                }
                if room.is_empty() {
                    // RFC 3463: permanent when the message can never fit in any of them.
                    let announced = i64::try_from(tx.params.size).unwrap_or(i64::MAX);
                    let never = full.iter().all(|b| b.max_size > 0 && announced > b.max_size);
                    return R(if never { texts::TOO_BIG_FOR_BOX } else { texts::MAILBOX_FULL }.into());
                }
                tx.rcpts.push(Recipient {
                    // As given; a bare `<Postmaster>` as the box it stands for, since the
                    // `for` clause takes a Mailbox (RFC 5321 §4.4).
                    forward_path: address.to_string(),
                    boxes: room.into_iter().map(|b| b.address).collect(),
                });
                return R(texts::RCPT_OK.into());
            }
            Resolution::NotLocal => {
                tracing::info!(peer = %self.peer, rcpt = %address, "relaying denied");
                self.settings.stats.failed("relay", &self.peer.to_string());
                texts::RELAY_DENIED.into()
            }
            Resolution::UnknownUser => {
                if bare_postmaster {
                    tracing::error!(postmaster = %address, "postmaster reaches no box: set [smtpd] postmaster");
                }
                tracing::info!(peer = %self.peer, rcpt = %address, "unknown recipient");
                self.settings.stats.failed("address", &self.peer.to_string());
                if self.bans.as_ref().is_some_and(|b| b.strike(self.peer, common::bans::Cause::Recipients)) {
                    // Banned: like the per-session limit, the transaction in progress
                    // (if any) completes; then the session ends.
                    if tx.rcpts.is_empty() {
                        return Outcome::Close(Reply::new(
                            421,
                            format!("4.7.0 {} Too many failures from your address, try again later", self.name()),
                        ));
                    }
                    self.close_after = true;
                }
                texts::USER_UNKNOWN.into()
            }
        };
        // Unknown recipients have a limit of their own: a dictionary attack ends there,
        // but a transaction with accepted recipients is never thrown away before DATA.
        self.unknown += 1;
        let limit = self.settings.smtpd.max_unknown_recipients;
        if limit > 0 && self.unknown >= limit {
            if tx.rcpts.is_empty() {
                return Outcome::Close(self.too_many_unknown());
            }
            self.close_after = true;
        }
        R(refusal)
    }

    /// `BDAT size [LAST]` (RFC 3030 §2): its octets are read in any case; they join the
    /// message when a transaction with accepted recipients is open, else the chunk is
    /// refused like DATA would be.
    fn bdat(&mut self, size: u64, last: bool) -> Outcome {
        let limits = self.data_limits();
        let refusal = match &mut self.state {
            State::Idle => Some(texts::NEED_MAIL.into()),
            State::Mail(tx) if tx.rcpts.is_empty() => Some(texts::NEED_RCPT.into()),
            State::Mail(tx) => {
                tx.chunks.get_or_insert_with(|| ChunkReceiver::new(limits));
                tx.chunked = true;
                None
            }
        };
        self.chunk = Some(PendingChunk { size, last, refusal });
        Outcome::Chunk(size)
    }

    /// Octets of the chunk of the last [`Outcome::Chunk`], in order, in any pieces.
    pub fn chunk_data(&mut self, octets: &[u8]) {
        if let Some(PendingChunk { refusal: None, .. }) = &self.chunk
            && let State::Mail(tx) = &mut self.state
            && let Some(message) = &mut tx.chunks
        {
            message.feed(octets);
        }
    }

    /// After [`chunk_data`](Self::chunk_data): the message's octets so far stay in
    /// memory or go to its spool file, as [`spill`](Self::spill) says.
    pub async fn chunk_spill(&mut self) {
        if let State::Mail(tx) = &mut self.state
            && let Some(message) = &mut tx.chunks
            && tx.spool.spill(&tx.id, &self.settings, message.held()).await
        {
            message.clear_held();
        }
    }

    /// With `held`, the octets of the message being received that are in memory: past
    /// `spool_threshold`, whether they stay there (`false`: within `spool_memory` for
    /// the daemon's messages together) or went to the transaction's spool file (`true`:
    /// the caller forgets them). A spool that cannot be written is logged, and the
    /// message gets a temporary error at its end (issue 16).
    pub async fn spill(&mut self, held: &[u8]) -> bool {
        match &mut self.state {
            State::Mail(tx) => tx.spool.spill(&tx.id, &self.settings, held).await,
            _ => false,
        }
    }

    /// After the octets of a chunk: its reply. A chunk that takes the message over the
    /// size (or line) limit ends the transaction with `552 5.3.4`, so the chunks that
    /// follow it get `503 Need MAIL first`; the last chunk stores the message (design.md
    /// "Durability": `250` only after the commit).
    pub async fn chunk_end(&mut self, store: &Store) -> Outcome {
        let Some(chunk) = self.chunk.take() else {
            return self.count(Outcome::Reply(texts::NEED_MAIL.into()));
        };
        if let Some(refusal) = chunk.refusal {
            return self.count(Outcome::Reply(refusal));
        }
        let State::Mail(tx) = &mut self.state else {
            return self.count(Outcome::Reply(texts::NEED_MAIL.into()));
        };
        if tx.chunks.as_ref().is_some_and(ChunkReceiver::too_big) {
            tracing::info!(peer = %self.peer, id = %tx.id, "message over the size or line limit (BDAT)");
            self.failed("size");
            self.state = State::Idle;
            return self.count(Outcome::Reply(texts::TOO_BIG.into()));
        }
        if !chunk.last {
            return Outcome::Reply(Reply::new(250, format!("2.0.0 {} octets received", chunk.size)));
        }
        let message = tx.chunks.take().unwrap_or_else(|| ChunkReceiver::new(self.data_limits()));
        self.data_end(message.finish(), store).await
    }

    /// Ends a DATA phase: checks what was received and stores it (design.md
    /// "Durability": `250` only after the commit). The transaction ends whatever happens.
    pub async fn data_end(&mut self, received: Received, store: &Store) -> Outcome {
        let outcome = Outcome::Reply(self.store_message(received, store).await);
        self.count(outcome)
    }

    async fn store_message(&mut self, received: Received, store: &Store) -> Reply {
        let State::Mail(mut tx) = std::mem::replace(&mut self.state, State::Idle) else {
            return texts::NEED_RCPT.into();
        };
        if received.bare_line_end {
            tracing::info!(peer = %self.peer, id = %tx.id, "bare CR or LF in the message");
            self.failed("bare");
            return texts::BARE_CR_LF.into();
        }
        if received.too_big {
            tracing::info!(peer = %self.peer, id = %tx.id, "message over the size or line limit");
            self.failed("size");
            return texts::TOO_BIG.into();
        }
        if tx.spool.failed {
            return texts::LOCAL_ERROR.into();
        }
        // A spooled message is read back under a permit: at most `spool_loads` of them
        // are in memory at once (issue 16).
        let spooled = tx.spool.file.len();
        let _load = if spooled > 0 { Some(self.settings.loads.clone().acquire_owned().await) } else { None };
        let mut body = match std::mem::take(&mut tx.spool.file).into_message(received.message).await {
            Ok(message) => message,
            Err(e) => {
                tracing::error!(id = %tx.id, cause = %e, spooled, "cannot read the spooled message back");
                return texts::LOCAL_ERROR.into();
            }
        };
        let hops = count_received(&body);
        if hops > self.settings.smtpd.max_hops {
            tracing::info!(peer = %self.peer, id = %tx.id, hops, "too many hops");
            self.failed("size");
            return texts::TOO_MANY_HOPS.into();
        }
        // The checks' verdict, the client's verified name, and greylisting's answer
        // (asked only when no policy refused).
        let mut checked = None;
        if let Some(c) = self.checks.as_mut() {
            let verdict = c.after_data(&body).await;
            let host = c.host_name().await;
            let grey = match verdict.refusal {
                Some(_) => None,
                None => {
                    let from = tx.from.as_ref().map(ToString::to_string).unwrap_or_default();
                    let to: Vec<&str> = tx.rcpts.iter().map(|r| r.forward_path.as_str()).collect();
                    Some(c.greylist(store, &from, &to, verdict.aligned).await)
                }
            };
            checked = Some((verdict, host, grey));
        }
        let mut results = String::new();
        let mut host = None;
        if let Some((Verdict { field, refusal, results: verdicts, .. }, name, grey)) = checked {
            self.count_checks(&verdicts);
            tracing::info!(
                id = %tx.id,
                peer = %self.peer,
                results = %verdicts.iter().map(|(c, r)| format!("{c}={r}")).collect::<Vec<_>>().join(" "),
                "checked"
            );
            if let Some(refusal) = refusal {
                return self.refuse("data", refusal);
            }
            match grey {
                Some(Ok(Some(wait))) => {
                    self.count_check("greylist", "deferred");
                    return self.refuse("greylist", wait);
                }
                Some(Err(e)) => {
                    tracing::error!(cause = %e, "greylisting lookup failed");
                    return texts::LOCAL_ERROR.into();
                }
                _ => {}
            }
            // RFC 8601 §5: fields claiming our authserv-id were not added by us.
            if let Some(stripped) = crate::checks::strip_own_results(&body, self.name()) {
                tracing::info!(id = %tx.id, "Authentication-Results claiming this server removed");
                body = stripped;
            }
            results = field;
            host = name;
        }
        let copies = self.copies(&tx, &results, host.as_deref());
        let delivery = Delivery { body: &body, copies };
        match store.deliver(&delivery).await {
            Ok(()) => {
                if !self.flood_exempt() {
                    self.settings.flood.record(self.flood_key());
                }
                tracing::info!(
                    id = %tx.id,
                    from = %tx.from.as_ref().map(ToString::to_string).unwrap_or_default(),
                    boxes = delivery.copies.len(),
                    to = %tx.rcpts.iter().map(|r| r.forward_path.as_str()).collect::<Vec<_>>().join(","),
                    size = body.len(),
                    by = if tx.chunked { "BDAT" } else { "DATA" },
                    "stored"
                );
                self.count_stored(&delivery);
                Reply::new(250, format!("2.0.0 Ok, queued as {}", tx.id))
            }
            Err(DeliverError::NoRoom(b)) => {
                tracing::info!(id = %tx.id, r#box = %b, "box filled up before commit; nothing stored");
                self.settings.stats.failed("full", &b.to_string());
                texts::MAILBOX_FULL.into()
            }
            Err(DeliverError::Store(e)) => {
                tracing::error!(id = %tx.id, cause = %e, "storing failed; nothing stored");
                texts::LOCAL_ERROR.into()
            }
        }
    }

    /// `total|messages-in`/`bytes-in` once per message, `mailbox|<box>|messages-in`/
    /// `bytes-in` per copy (spec/mail.md §3.10); sizes are the stored octets (trace
    /// fields included for the copies).
    fn count_stored(&self, delivery: &Delivery<'_>) {
        let size = i64::try_from(delivery.body.len()).unwrap_or(i64::MAX);
        let mut b = self.settings.stats.batch();
        b.update(Flag::Persistent, &["total", "messages-in"], 1);
        b.update(Flag::Persistent, &["total", "bytes-in"], size);
        for c in &delivery.copies {
            let copy = size.saturating_add(i64::try_from(c.trace.len()).unwrap_or(0));
            let address = c.box_address.to_string();
            b.update(Flag::Persistent, &["mailbox", &address, "messages-in"], 1);
            b.update(Flag::Persistent, &["mailbox", &address, "bytes-in"], copy);
        }
        b.send();
    }

    /// One copy per distinct box; its trace names the first RCPT that reached it.
    /// `results` is the `Authentication-Results:` field (or empty), `host` the client's
    /// verified host name.
    fn copies(&self, tx: &Transaction, results: &str, host: Option<&str>) -> Vec<MailCopy> {
        let mut copies: Vec<MailCopy> = Vec::new();
        for r in &tx.rcpts {
            for b in &r.boxes {
                if copies.iter().any(|c| &c.box_address == b) {
                    continue;
                }
                copies.push(MailCopy {
                    box_address: b.clone(),
                    uid: format!("{}{}", tx.id, random_id()),
                    trace: self.trace(tx, &r.forward_path, results, host),
                });
            }
        }
        copies
    }

    /// `Return-Path:`, `Authentication-Results:` (`results`, RFC 8601, when checked) and
    /// `Received:` (RFC 5321 §4.4, RFC 3848 protocol names, RFC 6531 §4.3 UTF8 variants,
    /// the client's verified `host` name or `unknown`), CRLF-ended.
    fn trace(&self, tx: &Transaction, forward_path: &str, results: &str, host: Option<&str>) -> Vec<u8> {
        let helo = self.helo.as_ref().map_or_else(|| "unknown".to_owned(), |h| trace_name(&h.name));
        let extended = self.helo.as_ref().is_some_and(|h| h.extended);
        let protocol = match (tx.params.smtputf8, extended, self.tls) {
            (true, _, true) => "UTF8SMTPS",
            (true, _, false) => "UTF8SMTP",
            (false, true, true) => "ESMTPS",
            (false, true, false) => "ESMTP",
            (false, false, _) => "SMTP",
        };
        let ip = match self.peer {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        let date = OffsetDateTime::now_utc().format(&Rfc2822).unwrap_or_default();
        let from = tx.from.as_ref().map(ToString::to_string).unwrap_or_default();
        format!(
            "Return-Path: <{from}>\r\n{results}Received: from {helo} ({host} [{ip}])\r\n\tby {name} (mmsmtpd-rs) with {protocol}\r\n\tid {id}\r\n\tfor <{forward_path}>; {date}\r\n",
            name = self.name(),
            id = tx.id,
            host = host.unwrap_or("unknown"),
        )
        .into_bytes()
    }
}

/// The HELO/EHLO argument as it may stand in `Received: from` (RFC 5321 §4.4
/// `Extended-Domain`, RFC 5322 syntax): a domain or address literal as given; an
/// internationalised domain (RFC 6531 allows U-labels in EHLO) in its A-label form;
/// anything else (unbalanced parentheses, odd characters) as a quoted string with `\`
/// and `"` escaped and non-ASCII characters replaced by `?`, so the field always parses.
fn trace_name(name: &str) -> String {
    if name.is_ascii() && (common::address::is_domain(name) || common::address::is_address_literal(name)) {
        return name.to_owned();
    }
    if !name.is_ascii()
        && let Some(a_label) = common::address::a_label_domain(name)
    {
        return a_label;
    }
    let mut quoted = String::from("\"");
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => quoted.push(c),
            _ => quoted.push('?'),
        }
    }
    quoted.push('"');
    quoted
}

/// Number of `Received:` fields in the header of `message` (mail-parser does the header
/// parsing; a message without a header section has none).
fn count_received(message: &[u8]) -> usize {
    mail_parser::MessageParser::new()
        .parse_headers(message)
        .map_or(0, |m| m.headers().iter().filter(|h| h.name == mail_parser::HeaderName::Received).count())
}

fn syntax_reply(e: SyntaxError) -> Reply {
    match e {
        SyntaxError::Unrecognized => texts::UNRECOGNIZED,
        SyntaxError::Arguments => texts::BAD_ARGS,
        SyntaxError::Helo => texts::BAD_HELO,
        SyntaxError::Sender => texts::BAD_SENDER,
        SyntaxError::Recipient => texts::BAD_RCPT,
        SyntaxError::MailParam => texts::BAD_PARAM,
        SyntaxError::ParamSyntax => texts::PARAM_SYNTAX,
        SyntaxError::RcptParam => texts::BAD_RCPT_PARAM,
        SyntaxError::NeedsUtf8 => texts::NEED_SMTPUTF8,
        SyntaxError::Bdat => texts::BDAT_SYNTAX,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::{Charge, Kept, count_received, trace_name};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Messages in flight together share `spool_memory`: one that would take the total
    /// over is refused its growth (it goes to the spool) and the others keep theirs; a
    /// charge dropped (its transaction over) or released gives its octets back.
    #[test]
    fn messages_in_flight_share_the_allowance() {
        let total = Arc::new(AtomicUsize::new(0));
        let (mut a, mut b) = (Charge::default(), Charge::default());
        assert!(a.grow(&total, 1000, 400));
        assert!(a.grow(&total, 1000, 700), "grows by the difference");
        assert!(b.grow(&total, 1000, 300));
        assert!(!b.grow(&total, 1000, 301), "over the allowance together");
        assert_eq!(total.load(Ordering::Acquire), 1000);
        b.release();
        assert_eq!(total.load(Ordering::Acquire), 700);
        assert!(!Charge::default().grow(&total, 1000, 301));
        drop(a);
        assert_eq!(total.load(Ordering::Acquire), 0);
        let mut c = Charge::default();
        assert!(c.grow(&total, 1000, 1000));
        drop(c);
        assert_eq!(total.load(Ordering::Acquire), 0);
    }

    /// A reload (SIGHUP) makes new settings but not a new allowance: a message held in
    /// memory before it still counts after it; the read-back permits take the new
    /// `spool_loads`, those taken while it shrinks going as they are given back.
    #[tokio::test]
    async fn a_reload_keeps_the_allowance_and_resizes_the_read_back_permits() {
        let mut own = crate::config::SmtpdConfig { spool_loads: 2, ..Default::default() };
        let kept = Kept::new(&own);
        let mut before = Charge::default();
        assert!(before.grow(&kept.held, 1000, 800));
        own.spool_loads = 4;
        kept.update(&own);
        assert!(!Charge::default().grow(&kept.held, 1000, 300), "the message from before the reload counts");
        assert_eq!(kept.loads.available_permits(), 4);
        let taken = kept.loads.clone().acquire_many_owned(3).await.unwrap();
        own.spool_loads = 1;
        kept.update(&own);
        assert_eq!(kept.loads.available_permits(), 0, "the free permit goes at once");
        drop(taken);
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(kept.loads.available_permits(), 1, "two of the three given back are gone");
        drop(before);
        assert_eq!(kept.held.load(Ordering::Acquire), 0);
    }

    #[test]
    fn odd_helo_names_are_quoted_in_trace_fields() {
        assert_eq!(trace_name("mail.example.org"), "mail.example.org");
        assert_eq!(trace_name("[192.0.2.1]"), "[192.0.2.1]");
        assert_eq!(trace_name("x(unbalanced;"), "\"x(unbalanced;\"");
        assert_eq!(trace_name("jösé"), "xn--js-cja4c");
        assert_eq!(trace_name("jö sé"), "\"j? s?\"");
        assert_eq!(trace_name("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn hop_count_reads_header_only() {
        let m =
            b"Received: from a\r\n\tby b; date\r\nreceived: from c by d\r\nSubject: x\r\n\r\nReceived: body line\r\n";
        assert_eq!(count_received(m), 2);
        assert_eq!(count_received(b""), 0);
        assert_eq!(count_received(b"no header at all"), 0);
    }
}
