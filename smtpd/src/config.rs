//! `mmsmtpd.toml`: the shared sections of `common::config` plus `[smtpd]`
//! (spec/mail.md §3.2, design.md "Config"). `etc/mmsmtpd.toml` documents every key.

use common::address::Address;
use std::net::{IpAddr, SocketAddr};

use common::config::{Extra, Problems, Section, Shared};
use ipnet::IpNet;
use serde::Deserialize;
use serde::de::MapAccess;

/// Seconds of client silence allowed when `[limits] input_timeout` is not set.
pub const DEFAULT_INPUT_TIMEOUT: u64 = 300;

/// The whole file: the shared sections of `common::config` and `[smtpd]`.
pub type Config = common::config::DaemonFile<SmtpdConfig>;

/// Who may send with the null reverse-path `MAIL FROM:<>` (spec/mail.md §3.6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NullSender {
    /// Only clients whose address matches a `nofrom` row: mmmail's restriction, for a
    /// server that only trusted relays deliver to.
    Nofrom,
    /// Everyone: RFC 1123 §5.2.9 and RFC 5321 §4.5.5 require a public MX to accept the
    /// null reverse-path, which every bounce and delivery report uses.
    #[default]
    Accept,
}

/// `[smtpd]`: SMTP protocol limits and policies.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpdConfig {
    /// Recipients accepted per transaction (RFC 5321 §4.5.3.1.8 asks for at least 100).
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
    /// Maximum message size in bytes, after dot-unstuffing, CRLFs included, before the
    /// trace fields are added; advertised as `SIZE` (RFC 1870).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// Maximum number of lines in a message; 0 (the default) = no limit of its own, so a
    /// message within the advertised `SIZE` is never refused for its line count (RFC 1870).
    /// A non-zero value is checked too and answered `552 5.3.4`.
    #[serde(default)]
    pub max_message_lines: usize,
    /// Maximum `Received:` fields already in a message (mail loop guard; RFC 5321 §6.3
    /// asks for at least 100).
    #[serde(default = "default_max_hops")]
    pub max_hops: usize,
    /// Refuse MAIL before HELO/EHLO.
    #[serde(default = "default_true")]
    pub require_helo: bool,
    /// `"accept"` (default) or `"nofrom"`.
    #[serde(default)]
    pub null_sender: NullSender,
    /// Box for `RCPT TO:<postmaster>` and for `postmaster@<served domain>` when that domain
    /// has no box or alias of its own (RFC 5321 §4.5.1); empty = `postmaster@<server.name>`.
    #[serde(default)]
    pub postmaster: String,
    /// Recipients per connection refused because no box or alias serves them; after this
    /// many the server finishes the transaction in progress (its DATA is still accepted)
    /// and then closes with `421 4.7.0`. 0 = no limit. These refusals are not counted
    /// against `[limits] max_errors` and are not tarpitted.
    #[serde(default = "default_max_unknown_recipients")]
    pub max_unknown_recipients: usize,
    /// Messages one client address may deliver within `flood_window`; then MAIL gets
    /// `450 4.7.1` until the oldest leaves the window. 0 = no limit. The default, 300
    /// per 30 minutes, lets a mailing list host that sends one message per subscriber
    /// (VERP) reach a few hundred local subscribers, while a single infected host is
    /// held to 10 a minute; the refusal is temporary, so a legitimate sender only waits.
    #[serde(default = "default_flood_messages")]
    pub flood_messages: usize,
    /// The flood window in seconds.
    #[serde(default = "default_flood_window")]
    pub flood_window: u64,
    /// Client addresses the flood table tracks; the least recently seen is forgotten.
    #[serde(default = "default_flood_cache")]
    pub flood_cache: usize,
    /// Client networks (CIDR) the flood limit does not apply to: a relay or content
    /// filter of one's own that forwards everyone's mail. Default: none.
    #[serde(default)]
    pub flood_exempt: Vec<ipnet::IpNet>,
    /// `nofrom` patterns match the client's forward-confirmed host name as well as its
    /// address (mmmail's `RESOLVE_HOSTS`; design.md "Mail rules"). Needs `[checks]
    /// enabled`: the name is the one the reverse DNS check verified.
    #[serde(default)]
    pub resolve_hosts: bool,
    /// A message whose DMARC check (RFC 7489) fails for a domain publishing `p=reject` is
    /// refused with `550 5.7.1` (RFC 7489 §6.6.2), whatever `[checks] dmarc` says.
    #[serde(default = "default_true")]
    pub dmarc_reject: bool,
    /// Octets of a message always kept in memory while it arrives (issue 16); past them
    /// it stays in memory only within `spool_memory`, else the rest waits in a private
    /// temporary file in `spool_dir` until the end of DATA. 0 = never spool.
    #[serde(default = "default_spool_threshold")]
    pub spool_threshold: usize,
    /// Octets that messages past `spool_threshold` may keep in memory together, across
    /// all sessions, while they arrive and until their commit; a message that would take
    /// the total over, or that holds more than 1/32 of it, goes to the spool. 0 = every
    /// message past the threshold is spooled.
    #[serde(default = "default_spool_memory")]
    pub spool_memory: usize,
    /// Where spooled messages wait (unnamed files, gone when closed); empty = the
    /// system's temporary directory. Inside a `chroot`, a directory inside it.
    #[serde(default)]
    pub spool_dir: String,
    /// Spooled messages read back into memory at once to be checked and stored; the
    /// others wait their turn. Bounds the memory of large messages at the commit.
    #[serde(default = "default_spool_loads")]
    pub spool_loads: usize,
}

fn default_max_recipients() -> usize {
    100
}
fn default_max_message_size() -> usize {
    10_485_760
}
fn default_max_hops() -> usize {
    100
}
fn default_max_unknown_recipients() -> usize {
    20
}
fn default_spool_threshold() -> usize {
    65_536
}
fn default_spool_memory() -> usize {
    32 * 1024 * 1024
}
fn default_spool_loads() -> usize {
    2
}
fn default_true() -> bool {
    true
}
fn default_flood_messages() -> usize {
    300
}
fn default_flood_window() -> u64 {
    1800
}
fn default_flood_cache() -> usize {
    4096
}

impl Default for SmtpdConfig {
    fn default() -> Self {
        Self {
            max_recipients: default_max_recipients(),
            max_message_size: default_max_message_size(),
            max_message_lines: 0,
            max_hops: default_max_hops(),
            require_helo: true,
            null_sender: NullSender::default(),
            postmaster: String::new(),
            max_unknown_recipients: default_max_unknown_recipients(),
            flood_messages: default_flood_messages(),
            flood_window: default_flood_window(),
            flood_cache: default_flood_cache(),
            flood_exempt: Vec::new(),
            resolve_hosts: false,
            dmarc_reject: true,
            spool_threshold: default_spool_threshold(),
            spool_memory: default_spool_memory(),
            spool_dir: String::new(),
            spool_loads: default_spool_loads(),
        }
    }
}

impl SmtpdConfig {
    /// The postmaster box: `postmaster`, or `postmaster@<server_name>`.
    pub fn postmaster(&self, server_name: &str) -> Option<Address> {
        let text =
            if self.postmaster.is_empty() { format!("postmaster@{server_name}") } else { self.postmaster.clone() };
        Address::parse(&text, true).ok()
    }
}

impl Section for SmtpdConfig {
    const NAME: &'static str = "smtpd";
    type Extra = Checking;

    fn validate(&self, shared: &Shared, p: &mut Problems) {
        if self.max_recipients == 0 {
            p.add("smtpd.max_recipients", "must be at least 1");
        }
        if self.max_message_size == 0 {
            p.add("smtpd.max_message_size", "must be at least 1 byte");
        }
        if self.spool_loads == 0 {
            p.add("smtpd.spool_loads", "must be at least 1");
        }
        if !self.spool_dir.is_empty() && !std::path::Path::new(&self.spool_dir).is_absolute() {
            p.add("smtpd.spool_dir", format_args!("{:?} is not an absolute path", self.spool_dir));
        }
        if self.postmaster(&shared.server.name).is_none() {
            p.add("smtpd.postmaster", format_args!("{:?} is not a mailbox", self.postmaster));
        }
    }
}

/// What a check's failure gets (issue 14): recorded in `Authentication-Results:` only, a
/// temporary refusal (4xx) or a permanent one (5xx). A DNS temporary error never gets
/// a 5xx: under `tempfail` or `reject` it gets `451 4.4.3`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Recorded only (the default).
    #[default]
    Record,
    /// Refused with a 4xx: the client tries again later.
    Tempfail,
    /// Refused with a 5xx.
    Reject,
}

/// mmsmtpd's sections besides `[smtpd]`: who sent the mail (issue 14).
#[derive(Clone, Debug, Default)]
pub struct Checking {
    /// `[dns]`.
    pub dns: DnsConfig,
    /// `[checks]`.
    pub checks: ChecksConfig,
    /// `[[dnsbl]]`, in file order.
    pub dnsbl: Vec<DnsList>,
    /// `[greylist]`.
    pub greylist: GreylistConfig,
}

impl Checking {
    /// Whether any check is on (reverse DNS and the rest, a DNS list, greylisting).
    pub fn any(&self) -> bool {
        self.checks.enabled || !self.dnsbl.is_empty() || self.greylist.enabled
    }
}

impl Extra for Checking {
    const NAMES: &'static [&'static str] = &["dns", "checks", "dnsbl", "greylist"];

    fn visit<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "dns" => self.dns = map.next_value()?,
            "checks" => self.checks = map.next_value()?,
            "dnsbl" => self.dnsbl = map.next_value()?,
            _ => self.greylist = map.next_value()?,
        }
        Ok(())
    }

    fn validate(&self, _shared: &Shared, p: &mut Problems) {
        for (i, s) in self.dns.servers.iter().enumerate() {
            if name_server(s).is_none() {
                p.add(
                    &format!("dns.servers[{i}]"),
                    format_args!(
                        "{s:?} is not an address (\"192.0.2.53\", \"192.0.2.53:5353\", \"[2001:db8::53]:53\")"
                    ),
                );
            }
        }
        if !(1..=60).contains(&self.dns.timeout) {
            p.add("dns.timeout", "must be 1 to 60 seconds");
        }
        if !(1..=5).contains(&self.dns.attempts) {
            p.add("dns.attempts", "must be 1 to 5");
        }
        for (i, l) in self.dnsbl.iter().enumerate() {
            if !common::address::is_domain(&l.zone) {
                p.add(&format!("dnsbl[{i}].zone"), format_args!("{:?} is not a domain", l.zone));
            }
        }
        let g = &self.greylist;
        if g.delay == 0 || g.delay > 86_400 {
            p.add("greylist.delay", "must be 1 to 86400 seconds");
        }
        if g.expire <= g.delay {
            p.add("greylist.expire", "must be longer than greylist.delay");
        }
        if g.keep == 0 {
            p.add("greylist.keep", "must be at least 1 second");
        }
        if g.ipv4_prefix > 32 {
            p.add("greylist.ipv4_prefix", "must be 0 to 32");
        }
        if g.ipv6_prefix > 128 {
            p.add("greylist.ipv6_prefix", "must be 0 to 128");
        }
    }
}

/// A name server as `[dns] servers` spells it: an address, with or without a port
/// (default 53).
pub fn name_server(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>().ok().or_else(|| text.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

/// `[dns]`: the resolver every check uses (hickory-resolver, with its cache).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Name servers (`"192.0.2.53"`, `"192.0.2.53:5353"`, `"[2001:db8::53]:53"`), asked
    /// over UDP and TCP; empty (the default) = those of `/etc/resolv.conf`, read at start.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Seconds one query waits for an answer; also the most a session as a whole waits
    /// for DNS answers (lookups run while the session goes on). 1 to 60.
    #[serde(default = "default_dns_timeout")]
    pub timeout: u64,
    /// Tries of each query, 1 to 5.
    #[serde(default = "default_dns_attempts")]
    pub attempts: usize,
    /// Answers kept in the resolver's cache (each for its TTL).
    #[serde(default = "default_dns_cache")]
    pub cache: u64,
}

fn default_dns_timeout() -> u64 {
    5
}
fn default_dns_attempts() -> usize {
    2
}
fn default_dns_cache() -> u64 {
    4096
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timeout: default_dns_timeout(),
            attempts: default_dns_attempts(),
            cache: default_dns_cache(),
        }
    }
}

/// `[checks]`: reverse DNS, SPF, DKIM, DMARC and ARC of every client outside `exempt`,
/// recorded in one `Authentication-Results:` field (RFC 8601) on every stored copy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksConfig {
    /// Whether the checks run at all (DNS lists and greylisting have their own switches).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Client networks that are not checked at all (own relays, content filters, local
    /// submission); default loopback. Their copies get no `Authentication-Results:` field
    /// and keep those they carry.
    #[serde(default = "default_checks_exempt")]
    pub exempt: Vec<IpNet>,
    /// Forward-confirmed reverse DNS (RFC 8601 §3 "iprev") failing, answered at MAIL.
    #[serde(default)]
    pub rdns: Policy,
    /// SPF (RFC 7208) `fail` of the MAIL FROM identity (of the HELO identity for the
    /// null reverse-path), answered at MAIL.
    #[serde(default)]
    pub spf: Policy,
    /// DKIM (RFC 6376): a message with signatures none of which verifies, after DATA.
    #[serde(default)]
    pub dkim: Policy,
    /// DMARC (RFC 7489) `fail`, whatever the domain's policy, after DATA.
    #[serde(default)]
    pub dmarc: Policy,
    /// ARC (RFC 8617) chain `fail`, after DATA.
    #[serde(default)]
    pub arc: Policy,
}

fn default_checks_exempt() -> Vec<IpNet> {
    vec![loopback_v4(), IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST))]
}

impl Default for ChecksConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            exempt: default_checks_exempt(),
            rdns: Policy::Record,
            spf: Policy::Record,
            dkim: Policy::Record,
            dmarc: Policy::Record,
            arc: Policy::Record,
        }
    }
}

/// What a listing in a DNS list does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListAction {
    /// Refused with `554 5.7.1` (default).
    #[default]
    Reject,
    /// Refused with `4xx 4.7.1`.
    Tempfail,
    /// Logged and counted only.
    Record,
    /// An allow list: a listed client skips the other lists and greylisting.
    Allow,
}

/// Where a DNS block list refuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListStage {
    /// Instead of the greeting (`554`/`421`), then the connection closes.
    #[default]
    Connect,
    /// At each RCPT (`554 5.7.1`/`450 4.7.1`), except to postmaster (RFC 5321 §4.5.1).
    Rcpt,
}

/// `[[dnsbl]]`: one DNS block or allow list (RFC 5782), asked at connect.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsList {
    /// The list's zone: client 192.0.2.1 is looked up as `1.2.0.192.<zone>` (IPv6: its
    /// 32 nibbles reversed).
    pub zone: String,
    /// What a listing does.
    #[serde(default)]
    pub action: ListAction,
    /// The A answers that count as listed (addresses or networks); default
    /// `127.0.0.0/8` (RFC 5782 §2.1). Other answers (a list's error codes) are ignored.
    #[serde(default = "default_answers")]
    pub answers: Vec<IpNet>,
    /// Where a block list refuses.
    #[serde(default)]
    pub stage: ListStage,
}

fn default_answers() -> Vec<IpNet> {
    vec![loopback_v4()]
}

fn loopback_v4() -> IpNet {
    IpNet::new(IpAddr::from([127, 0, 0, 0]), 8).expect("8 is a valid IPv4 prefix")
}

/// `[greylist]`: a triplet (client network, reverse-path, forward-path) seen for the first
/// time is refused with `451 4.7.1` after DATA, and passes when retried after `delay`.
/// The table is in the database, shared by every instance. Messages with an aligned
/// DKIM pass (DMARC's DKIM alignment), clients in `pass` and clients on an allow list
/// skip it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GreylistConfig {
    /// Off by default.
    #[serde(default)]
    pub enabled: bool,
    /// Seconds a new triplet waits.
    #[serde(default = "default_grey_delay")]
    pub delay: u64,
    /// Seconds a refused triplet's retry may take before it counts as new again.
    #[serde(default = "default_grey_expire")]
    pub expire: u64,
    /// Seconds a passed triplet stays passed since it was last seen.
    #[serde(default = "default_grey_keep")]
    pub keep: u64,
    /// Client networks never greylisted.
    #[serde(default)]
    pub pass: Vec<IpNet>,
    /// IPv4 clients are grouped by this prefix (a sender's pool of outgoing hosts).
    #[serde(default = "default_grey_v4")]
    pub ipv4_prefix: u8,
    /// IPv6 clients are grouped by this prefix.
    #[serde(default = "default_grey_v6")]
    pub ipv6_prefix: u8,
}

fn default_grey_delay() -> u64 {
    300
}
fn default_grey_expire() -> u64 {
    4 * 3600
}
fn default_grey_keep() -> u64 {
    36 * 86_400
}
fn default_grey_v4() -> u8 {
    24
}
fn default_grey_v6() -> u8 {
    64
}

impl Default for GreylistConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            delay: default_grey_delay(),
            expire: default_grey_expire(),
            keep: default_grey_keep(),
            pass: Vec::new(),
            ipv4_prefix: default_grey_v4(),
            ipv6_prefix: default_grey_v6(),
        }
    }
}
