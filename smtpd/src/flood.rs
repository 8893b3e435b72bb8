//! Message flood limit per client address (spec/mail.md §3.9): at most `flood_messages`
//! accepted messages from one address (IPv6 network) within `flood_window` seconds; the
//! table tracks at most `flood_cache` addresses, forgetting the least recently updated.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::SmtpdConfig;

#[derive(Debug)]
struct Entry {
    accepted: VecDeque<Instant>,
    touched: Instant,
}

#[derive(Debug)]
struct State {
    limit: usize,
    window: Duration,
    capacity: usize,
    entries: HashMap<IpAddr, Entry>,
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
            capacity: cfg.flood_cache.max(1),
            entries: HashMap::new(),
        }))
    }

    /// Takes new settings (SIGHUP); counts so far are kept.
    pub fn update(&self, cfg: &SmtpdConfig) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.limit = cfg.flood_messages;
        s.window = Duration::from_secs(cfg.flood_window);
        s.capacity = cfg.flood_cache.max(1);
    }

    /// Whether `key` already sent its quota within the window (0 = never).
    pub fn exceeded(&self, key: IpAddr) -> bool {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if s.limit == 0 {
            return false;
        }
        let (limit, window) = (s.limit, s.window);
        let Some(e) = s.entries.get_mut(&key) else { return false };
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
        let now = Instant::now();
        if !s.entries.contains_key(&key) && s.entries.len() >= s.capacity {
            let oldest = s.entries.iter().min_by_key(|(_, e)| e.touched).map(|(k, _)| *k);
            if let Some(k) = oldest {
                s.entries.remove(&k);
            }
        }
        let limit = s.limit;
        let e = s.entries.entry(key).or_insert_with(|| Entry { accepted: VecDeque::new(), touched: now });
        e.accepted.push_back(now);
        e.touched = now;
        while e.accepted.len() > limit {
            e.accepted.pop_front();
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
