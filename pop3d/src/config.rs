//! `mmpop3d.toml`: the shared sections of `common::config` plus `[pop3d]`
//! (spec/mail.md §4.1). `etc/mmpop3d.toml` documents every key.

use common::config::{Problems, Section, Shared};
use serde::Deserialize;

/// RFC 1939 §3: the inactivity autologout timer must be at least 10 minutes (seconds).
pub const MIN_INPUT_TIMEOUT: u64 = 600;

/// The whole file: the shared sections of `common::config` and `[pop3d]`; `[listen]`
/// has plain POP3 (110, STLS when `[tls]` is set) and POP3S (995).
pub type Config = common::config::DaemonFile<Pop3dConfig>;

/// Raises `[limits] input_timeout` to [`MIN_INPUT_TIMEOUT`] (RFC 1939 §3); returns
/// whether it was lower. `mmpop3d` applies this to every loaded file.
pub fn enforce_min_input_timeout(cfg: &mut Config) -> bool {
    match cfg.limits.input_timeout {
        Some(t) if t < MIN_INPUT_TIMEOUT => {
            cfg.limits.input_timeout = Some(MIN_INPUT_TIMEOUT);
            true
        }
        _ => false,
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
    /// Seconds of silence allowed before login (USER/PASS or AUTH done); `[limits]
    /// input_timeout` (at least 600, RFC 1939 §3) applies after. Attackers that connect
    /// and wait hold a place this long.
    #[serde(default = "default_login_timeout")]
    pub login_timeout: u64,
}

fn default_true() -> bool {
    true
}
fn default_lock_lease() -> u64 {
    120
}
fn default_login_timeout() -> u64 {
    60
}

impl Default for Pop3dConfig {
    fn default() -> Self {
        Self {
            allow_plaintext_auth: false,
            dot_login: true,
            rehash_legacy: true,
            lock_lease: default_lock_lease(),
            hash_concurrency: 0,
            login_timeout: default_login_timeout(),
        }
    }
}

impl Section for Pop3dConfig {
    const NAME: &'static str = "pop3d";
    type Extra = ();

    fn validate(&self, _shared: &Shared, p: &mut Problems) {
        if self.lock_lease < 3 {
            p.add("pop3d.lock_lease", "must be at least 3 seconds");
        }
        if self.login_timeout == 0 {
            p.add("pop3d.login_timeout", "must be at least 1 second");
        }
    }
}
