//! Built-in bans, shared by every daemon on one database (issue 13): a client address
//! (IPv6: its `[limits] ipv6_prefix` network) that fails `login_failures` logins, or
//! probes `unknown_recipients` unknown recipients, within `window` seconds is refused
//! at connect for `duration` seconds: one protocol line and a close. Bans are rows of
//! the `ban` table, so every mmsmtpd, mmpop3d and mmtmtpd on the database refuses the
//! address; each daemon reads them every [`REFRESH`] and knows its own at once.
//! Networks in `allow` are never banned.
//!
//! Counters (spec/mail.md §3.10 naming): `total|bans` and `failed|banned|<address>`
//! (refused at connect); the state is visible as the volatile key `banned|<address>`,
//! holding the epoch second the ban ends, removed when it does.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::{Problems, Validate};
use crate::guard::Recent;
use crate::net::gate::address_key;
use crate::stats::{Flag, Stats};
use crate::store::{Store, unix_now};

/// How often a daemon reads the bans other daemons made.
pub const REFRESH: Duration = Duration::from_secs(5);

/// Addresses whose strikes are remembered, at most (least recently struck forgotten).
const CAPACITY: usize = 16_384;

/// `[bans]`: when an address is banned, for how long, and who never is.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BansConfig {
    /// `false` turns bans off: nobody is banned and bans are not read.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Failed logins (POP3 USER/PASS or AUTH) from one address within `window` that
    /// ban it; 0 = never for this.
    #[serde(default = "default_login_failures")]
    pub login_failures: u32,
    /// Unknown recipients (SMTP `550 5.1.1`) from one address within `window` that ban
    /// it; 0 = never for this.
    #[serde(default = "default_unknown_recipients")]
    pub unknown_recipients: u32,
    /// Seconds over which failures are counted.
    #[serde(default = "default_window")]
    pub window: u64,
    /// Seconds a ban lasts.
    #[serde(default = "default_duration")]
    pub duration: u64,
    /// Client networks (CIDR) never banned.
    #[serde(default = "default_allow")]
    pub allow: Vec<ipnet::IpNet>,
}

fn default_true() -> bool {
    true
}
fn default_login_failures() -> u32 {
    10
}
fn default_unknown_recipients() -> u32 {
    50
}
fn default_window() -> u64 {
    600
}
fn default_duration() -> u64 {
    3600
}
fn default_allow() -> Vec<ipnet::IpNet> {
    ["127.0.0.0/8", "::1/128"].iter().filter_map(|n| n.parse().ok()).collect()
}

impl Default for BansConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            login_failures: default_login_failures(),
            unknown_recipients: default_unknown_recipients(),
            window: default_window(),
            duration: default_duration(),
            allow: default_allow(),
        }
    }
}

impl Validate for BansConfig {
    fn validate(&self, p: &mut Problems) {
        if self.window == 0 {
            p.add("bans.window", "must be at least 1 second");
        }
        if self.duration == 0 {
            p.add("bans.duration", "must be at least 1 second");
        }
    }
}

/// Why an address was banned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Failed logins.
    Login,
    /// Unknown recipients probed.
    Recipients,
}

impl Cause {
    fn name(self) -> &'static str {
        match self {
            Cause::Login => "login",
            Cause::Recipients => "recipients",
        }
    }
}

/// A daemon's bans: the ones in force (its own and those read from the database) and
/// the strikes counted toward new ones.
pub struct Bans {
    cfg: RwLock<(BansConfig, u8)>,
    store: Store,
    stats: Stats,
    /// Address key → ban end (epoch seconds), and when this daemon made it (until the
    /// database has it; after that the table is the truth, so `mmadmin ban del` lifts it).
    active: RwLock<HashMap<IpAddr, (i64, Option<Instant>)>>,
    strikes: Recent<(IpAddr, Cause)>,
}

impl std::fmt::Debug for Bans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bans").field("active", &self.active.read().map(|a| a.len()).unwrap_or(0)).finish()
    }
}

impl Bans {
    /// Bans as `cfg` says, for a daemon on `store` that groups IPv6 clients by
    /// `ipv6_prefix` bits and counts with `stats`.
    pub fn new(store: Store, cfg: &BansConfig, ipv6_prefix: u8, stats: Stats) -> Arc<Bans> {
        Arc::new(Bans {
            cfg: RwLock::new((cfg.clone(), ipv6_prefix)),
            store,
            stats,
            active: RwLock::default(),
            strikes: Recent::new(CAPACITY, Duration::from_secs(cfg.window)),
        })
    }

    /// Takes new settings (SIGHUP); bans in force stay.
    pub fn update(&self, cfg: &BansConfig, ipv6_prefix: u8) {
        self.strikes.set(CAPACITY, Duration::from_secs(cfg.window));
        *self.cfg.write().unwrap_or_else(|p| p.into_inner()) = (cfg.clone(), ipv6_prefix);
    }

    /// The settings, read in place (asked at every connection: no copy).
    fn settings(&self) -> std::sync::RwLockReadGuard<'_, (BansConfig, u8)> {
        self.cfg.read().unwrap_or_else(|p| p.into_inner())
    }

    fn allowed(cfg: &BansConfig, ip: IpAddr) -> bool {
        cfg.allow.iter().any(|n| n.contains(&ip))
    }

    /// When the ban of `ip` ends (epoch seconds), if it is banned now.
    pub fn banned(&self, ip: IpAddr) -> Option<i64> {
        let key = {
            let s = self.settings();
            if !s.0.enabled || Self::allowed(&s.0, ip) {
                return None;
            }
            address_key(ip, s.1)
        };
        let (until, _) = *self.active.read().unwrap_or_else(|p| p.into_inner()).get(&key)?;
        (until > unix_now()).then_some(until)
    }

    /// Counts one failure of `cause` from `ip`; at the configured number within the
    /// window the address is banned (here at once, in the database in the background).
    /// Returns whether this strike banned it.
    pub fn strike(self: &Arc<Self>, ip: IpAddr, cause: Cause) -> bool {
        let (key, limit, duration) = {
            let (cfg, prefix) = &*self.settings();
            let limit = match cause {
                Cause::Login => cfg.login_failures,
                Cause::Recipients => cfg.unknown_recipients,
            } as usize;
            if !cfg.enabled || limit == 0 || Self::allowed(cfg, ip) {
                return false;
            }
            (address_key(ip, *prefix), limit, cfg.duration)
        };
        let count = self.strikes.record((key, cause), limit);
        if count < limit {
            return false;
        }
        self.strikes.clear(&(key, cause));
        let until = unix_now().saturating_add(i64::try_from(duration).unwrap_or(i64::MAX));
        self.active.write().unwrap_or_else(|p| p.into_inner()).insert(key, (until, Some(Instant::now())));
        tracing::warn!(address = %key, cause = cause.name(), failures = count, until, "banned");
        self.stats
            .batch()
            .update(Flag::Persistent, &["total", "bans"], 1)
            .set(Flag::Volatile, &["banned", &key.to_string()], until)
            .send();
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.store.ban(&key.to_string(), until, cause.name()).await {
                tracing::error!(address = %key, cause = %e, "ban not stored: other daemons will not see it");
            }
        });
        true
    }

    /// Reads the bans in force from the database (other daemons' too) and forgets the
    /// ones that are over.
    pub async fn refresh(&self) {
        let enabled = self.settings().0.enabled;
        if !enabled {
            return;
        }
        let rows = match self.store.active_bans().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(cause = %e, "bans not read; keeping the ones known");
                return;
            }
        };
        let fresh: HashMap<IpAddr, i64> =
            rows.into_iter().filter_map(|(a, until)| a.parse::<IpAddr>().ok().map(|ip| (ip, until))).collect();
        let now = unix_now();
        // A ban this daemon made may not be stored yet: kept for two refreshes.
        let pending = |made: &Option<Instant>| made.is_some_and(|t| t.elapsed() < 2 * REFRESH);
        let mut active = self.active.write().unwrap_or_else(|p| p.into_inner());
        let mut batch = self.stats.batch();
        for (ip, (until, made)) in active.iter() {
            if !fresh.contains_key(ip) && (*until <= now || !pending(made)) {
                tracing::info!(address = %ip, "ban over");
                batch.delete(&["banned", &ip.to_string()]);
            }
        }
        active.retain(|ip, (until, made)| fresh.contains_key(ip) || (*until > now && pending(made)));
        for (ip, until) in fresh {
            let known = active.insert(ip, (until, None));
            if known.is_none_or(|(before, _)| before != until) {
                batch.set(Flag::Volatile, &["banned", &ip.to_string()], until);
            }
        }
        batch.send();
    }

    /// Refreshes every [`REFRESH`] until `token` is cancelled.
    pub async fn keep_fresh(self: Arc<Self>, token: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(REFRESH);
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = tick.tick() => self.refresh().await,
            }
        }
    }
}
