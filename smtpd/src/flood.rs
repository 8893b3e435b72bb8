//! Message flood limit per client address (spec/mail.md §3.9): at most `flood_messages`
//! accepted messages from one address (IPv6 network) within `flood_window` seconds; the
//! table tracks at most `flood_cache` addresses, forgetting the least recently updated
//! (an LRU cache: finding and evicting it costs O(1), whatever the table's size).

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::guard::Recent;

use crate::config::SmtpdConfig;

/// The flood table shared by all sessions of a daemon: accepted messages per address
/// within the window ([`Recent`]), and the limit.
#[derive(Debug)]
pub struct Flood {
    limit: AtomicUsize,
    accepted: Recent<IpAddr>,
}

impl Flood {
    /// A table with the `[smtpd]` flood settings.
    pub fn new(cfg: &SmtpdConfig) -> Self {
        Flood {
            limit: AtomicUsize::new(cfg.flood_messages),
            accepted: Recent::new(cfg.flood_cache, Duration::from_secs(cfg.flood_window)),
        }
    }

    /// Takes new settings (SIGHUP); counts so far are kept.
    pub fn update(&self, cfg: &SmtpdConfig) {
        self.limit.store(cfg.flood_messages, Ordering::Relaxed);
        self.accepted.set(cfg.flood_cache, Duration::from_secs(cfg.flood_window));
    }

    /// Whether `key` already sent its quota within the window (0 = never).
    pub fn exceeded(&self, key: IpAddr) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        limit > 0 && self.accepted.count(&key) >= limit
    }

    /// Counts one accepted message from `key`.
    pub fn record(&self, key: IpAddr) {
        let limit = self.limit.load(Ordering::Relaxed);
        if limit > 0 {
            self.accepted.record(key, limit);
        }
    }

    /// Addresses tracked (bounded by `flood_cache`).
    pub fn len(&self) -> usize {
        self.accepted.len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.accepted.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_window_and_capacity() {
        let cfg = SmtpdConfig { flood_messages: 2, flood_window: 3600, flood_cache: 3, ..SmtpdConfig::default() };
        let f = Flood::new(&cfg);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!f.exceeded(a));
        f.record(a);
        assert!(!f.exceeded(a));
        f.record(a);
        assert!(f.exceeded(a));
        for i in 2..10u8 {
            f.record(IpAddr::from([192, 0, 2, i]));
        }
        assert_eq!(f.len(), 3, "bounded by flood_cache");
        assert!(!f.exceeded(a), "the least recently updated address was forgotten");
        let off = Flood::new(&SmtpdConfig { flood_messages: 0, ..SmtpdConfig::default() });
        off.record(a);
        assert!(!off.exceeded(a) && off.is_empty());
        let short = Flood::new(&SmtpdConfig { flood_messages: 1, flood_window: 0, ..SmtpdConfig::default() });
        short.record(a);
        assert!(!short.exceeded(a), "a zero window expires at once");
    }
}
