//! `mmsmtpd.toml`: the shared sections of `common::config` plus `[smtpd]`
//! (spec/mail.md §3.2, design.md "Config"). `etc/mmsmtpd.toml` documents every key.

use common::address::Address;
use common::config::{Problems, Section, Shared};
use serde::Deserialize;

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

    fn validate(&self, shared: &Shared, p: &mut Problems) {
        if self.max_recipients == 0 {
            p.add("smtpd.max_recipients", "must be at least 1");
        }
        if self.max_message_size == 0 {
            p.add("smtpd.max_message_size", "must be at least 1 byte");
        }
        if self.postmaster(&shared.server.name).is_none() {
            p.add("smtpd.postmaster", format_args!("{:?} is not a mailbox", self.postmaster));
        }
    }
}
