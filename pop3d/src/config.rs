//! `mmpop3d.toml`: the shared sections of `common::config` plus `[pop3d]`
//! (spec/mail.md §4.1). `etc/mmpop3d.toml` documents every key.

use common::config::{
    DatabaseConfig, LimitsConfig, ListenConfig, LogConfig, Problems, ServerConfig, TlsConfig, Validate,
};
use common::net::shaping::ShapingConfig;
use common::privileges::PrivilegesConfig;
use common::stats::StatsConfig;
use serde::Deserialize;

/// RFC 1939 §3: the inactivity autologout timer must be at least 10 minutes (seconds).
pub const MIN_INPUT_TIMEOUT: u64 = 600;

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[listen]`: plain POP3 (110, STLS when `[tls]` is set) and POP3S (995).
    pub listen: ListenConfig,
    /// `[tls]`.
    pub tls: Option<TlsConfig>,
    /// `[limits]`.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[shaping]`.
    #[serde(default)]
    pub shaping: ShapingConfig,
    /// `[privileges]`.
    #[serde(default)]
    pub privileges: PrivilegesConfig,
    /// `[log]`.
    #[serde(default)]
    pub log: LogConfig,
    /// `[stats]`: where counters go (mmstatd's socket).
    #[serde(default)]
    pub stats: StatsConfig,
    /// `[pop3d]`.
    #[serde(default)]
    pub pop3d: Pop3dConfig,
}

impl Config {
    /// Raises `[limits] input_timeout` to [`MIN_INPUT_TIMEOUT`] (RFC 1939 §3); returns
    /// whether it was lower. `mmpop3d` applies this to every loaded file.
    pub fn enforce_min_input_timeout(&mut self) -> bool {
        match self.limits.input_timeout {
            Some(t) if t < MIN_INPUT_TIMEOUT => {
                self.limits.input_timeout = Some(MIN_INPUT_TIMEOUT);
                true
            }
            _ => false,
        }
    }
}

/// `[pop3d]`: login and locking policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pop3dConfig {
    /// Allow USER/PASS and AUTH PLAIN over a connection that is neither TLS nor from a
    /// loopback address (passwords then cross the network in clear).
    #[serde(default)]
    pub allow_plaintext_auth: bool,
    /// mmmail's login convention: without `@` (or `%`), the first `.` of the login name
    /// stands for the `@` (`mmondor.example.org` logs into `mmondor@example.org`).
    #[serde(default = "default_true")]
    pub dot_login: bool,
    /// Replace a legacy MD5 password with an Argon2id hash after a successful login.
    #[serde(default = "default_true")]
    pub rehash_legacy: bool,
    /// Seconds a maildrop lock lease lasts; a live session renews it every third of that.
    /// A crashed session's box is free again after at most this long.
    #[serde(default = "default_lock_lease")]
    pub lock_lease: u64,
    /// Password verifications running at once (each Argon2 check takes 64 MiB); 0 = the
    /// number of CPUs. Further logins wait.
    #[serde(default)]
    pub hash_concurrency: usize,
}

fn default_true() -> bool {
    true
}
fn default_lock_lease() -> u64 {
    120
}

impl Default for Pop3dConfig {
    fn default() -> Self {
        Self {
            allow_plaintext_auth: false,
            dot_login: true,
            rehash_legacy: true,
            lock_lease: default_lock_lease(),
            hash_concurrency: 0,
        }
    }
}

impl Validate for Config {
    fn validate(&self, p: &mut Problems) {
        self.server.validate(p);
        self.database.validate(p);
        self.listen.validate_with(self.tls.is_some(), p);
        if let Some(tls) = &self.tls {
            tls.validate(p);
        }
        self.limits.validate(p);
        self.shaping.validate(p);
        self.privileges.validate_with(&self.database, p);
        self.log.validate(p);
        self.stats.validate(p);
        if self.pop3d.lock_lease < 3 {
            p.add("pop3d.lock_lease", "must be at least 3 seconds");
        }
    }
}
