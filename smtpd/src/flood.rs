//! Message flood limit per client address (spec/mail.md §3.9): at most `flood_messages`
//! accepted messages from one address (IPv6 network) within `flood_window` seconds; the
//! table tracks at most `flood_cache` addresses, forgetting the least recently updated
//! (an LRU cache: finding and evicting it costs O(1), whatever the table's size).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hashlink::LruCache;

use crate::config::SmtpdConfig;

/// Accepted messages of one address, oldest first.
#[derive(Debug)]
struct Entry {
    accepted: VecDeque<Instant>,
}

struct State {
    limit: usize,
    window: Duration,
    /// Most recently updated last.
    entries: LruCache<IpAddr, Entry>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("limit", &self.limit).field("tracked", &self.entries.len()).finish()
    }
}

/// The flood table shared by all sessions of a daemon.
#[derive(Debug)]
pub struct Flood(Mutex<State>);

impl Flood {
    /// A table with the `[smtpd]` flood settings.
    pub fn new(cfg: &SmtpdConfig) -> Self {
        Flood(Mutex::new(State {
            limit: cfg.flood_messages,
            window: Duration::from_secs(cfg.flood_window),
            entries: LruCache::new(cfg.flood_cache.max(1)),
        }))
    }

    /// Takes new settings (SIGHUP); counts so far are kept.
    pub fn update(&self, cfg: &SmtpdConfig) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.limit = cfg.flood_messages;
        s.window = Duration::from_secs(cfg.flood_window);
        s.entries.set_capacity(cfg.flood_cache.max(1));
    }

    /// Whether `key` already sent its quota within the window (0 = never).
    pub fn exceeded(&self, key: IpAddr) -> bool {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if s.limit == 0 {
            return false;
        }
        let (limit, window) = (s.limit, s.window);
        // Looking is not updating: the entry keeps its place in the eviction order.
        let Some(e) = s.entries.peek_mut(&key) else { return false };
        let now = Instant::now();
        while e.accepted.front().is_some_and(|t| now.duration_since(*t) >= window) {
            e.accepted.pop_front();
        }
        e.accepted.len() >= limit
    }

    /// Counts one accepted message from `key`.
    pub fn record(&self, key: IpAddr) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if s.limit == 0 {
            return;
        }
        let limit = s.limit;
        if s.entries.get_mut(&key).is_none() {
            // A full cache evicts its least recently updated entry.
            s.entries.insert(key, Entry { accepted: VecDeque::new() });
        }
        if let Some(e) = s.entries.get_mut(&key) {
            e.accepted.push_back(Instant::now());
            while e.accepted.len() > limit {
                e.accepted.pop_front();
            }
        }
    }

    /// Addresses tracked (bounded by `flood_cache`).
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).entries.len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
