//! `mmstatd.toml`: `[stats]` (the datagram socket, the same key the other daemons use),
//! `[statd]`, `[privileges]` and `[log]` (spec/mail.md §5.2 "mmstatd.conf keys",
//! design.md "Config"). `etc/mmstatd.toml` documents every key.

use std::net::SocketAddr;
use std::path::PathBuf;

use common::config::{LogConfig, Problems, Validate};
use common::privileges::PrivilegesConfig;
use common::stats::StatsConfig;
use serde::Deserialize;

/// Where `mmstat` asks unless told otherwise.
pub const DEFAULT_QUERY_SOCKET: &str = "/var/run/mmstatd/query.sock";

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[stats]`: `socket` is where mmstatd receives updates.
    #[serde(default)]
    pub stats: StatsConfig,
    /// `[statd]`.
    #[serde(default)]
    pub statd: StatdConfig,
    /// `[privileges]`.
    #[serde(default)]
    pub privileges: PrivilegesConfig,
    /// `[log]`.
    #[serde(default)]
    pub log: LogConfig,
}

/// `[statd]`: storage, the query socket and the Prometheus endpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatdConfig {
    /// Unix stream socket `mmstat` talks to.
    #[serde(default = "default_query_socket")]
    pub query_socket: PathBuf,
    /// Permissions of both sockets, octal text (`"0660"`): the group is the one allowed
    /// to send updates and to query.
    #[serde(default = "default_socket_mode")]
    pub socket_mode: String,
    /// Group both sockets belong to (default: the group mmstatd runs as).
    pub socket_group: Option<String>,
    /// Directory of the snapshot and journals (created if missing).
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// Seconds between `fdatasync`s of the journal: the most a power cut can lose. A
    /// `kill -9` loses nothing already received (the journal is written at once).
    #[serde(default = "default_sync_interval")]
    pub sync_interval: u64,
    /// Seconds between snapshots.
    #[serde(default = "default_snapshot_interval")]
    pub snapshot_interval: u64,
    /// A journal beyond this many bytes triggers a snapshot early.
    #[serde(default = "default_max_journal_size")]
    pub max_journal_size: u64,
    /// Keys beyond this many are not created (the transaction is refused and counted).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// Loopback address of the Prometheus endpoint (`GET /metrics`); absent = none.
    pub prometheus: Option<SocketAddr>,
}

fn default_query_socket() -> PathBuf {
    PathBuf::from(DEFAULT_QUERY_SOCKET)
}
fn default_socket_mode() -> String {
    "0660".into()
}
fn default_dir() -> PathBuf {
    PathBuf::from("/var/lib/mmstatd")
}
fn default_sync_interval() -> u64 {
    1
}
fn default_snapshot_interval() -> u64 {
    300
}
fn default_max_journal_size() -> u64 {
    16 * 1024 * 1024
}
fn default_max_keys() -> usize {
    1_000_000
}

impl Default for StatdConfig {
    fn default() -> Self {
        Self {
            query_socket: default_query_socket(),
            socket_mode: default_socket_mode(),
            socket_group: None,
            dir: default_dir(),
            sync_interval: default_sync_interval(),
            snapshot_interval: default_snapshot_interval(),
            max_journal_size: default_max_journal_size(),
            max_keys: default_max_keys(),
            prometheus: None,
        }
    }
}

impl StatdConfig {
    /// `socket_mode` as bits.
    pub fn mode(&self) -> Option<u32> {
        u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8).ok().filter(|m| *m <= 0o777)
    }
}

impl Validate for StatdConfig {
    fn validate(&self, p: &mut Problems) {
        if self.mode().is_none() {
            p.add("statd.socket_mode", "must be octal permissions such as \"0660\"");
        }
        if self.sync_interval == 0 {
            p.add("statd.sync_interval", "must be at least 1 second");
        }
        if self.snapshot_interval == 0 {
            p.add("statd.snapshot_interval", "must be at least 1 second");
        }
        if self.max_keys == 0 {
            p.add("statd.max_keys", "must be at least 1");
        }
        if let Some(a) = self.prometheus
            && !a.ip().is_loopback()
        {
            p.add("statd.prometheus", "must be a loopback address (put a proxy in front to publish it)");
        }
        if self.query_socket.as_os_str().is_empty() {
            p.add("statd.query_socket", "must not be empty");
        }
    }
}

impl Validate for Config {
    fn validate(&self, p: &mut Problems) {
        self.stats.validate(p);
        if !self.stats.enabled {
            p.add("stats.enabled", "mmstatd needs its socket");
        }
        self.statd.validate(p);
        self.privileges.validate(p);
        self.log.validate(p);
    }
}
