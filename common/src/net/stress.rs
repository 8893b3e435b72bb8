//! Stress mode (issue 13; the idea is Postfix's stress-dependent behaviour, the design
//! our own): when a daemon's open connections reach `[limits] stress_threshold` percent
//! of `max_clients`, connections that have not logged in get `[limits] stress_timeout`
//! seconds of silence instead of the input timeout, and when every place is taken the
//! connection that has waited longest for input without logging in is closed, so that a
//! new client is served rather than refused. Attackers who open connections and say
//! nothing then hold places for seconds, not minutes.
//!
//! Each connection is followed by a [`Watch`] (atomics of its own, so marking costs no
//! lock): the line reader marks it idle while it waits for input ([`Watch::idle`]) and
//! busy when a line came ([`Watch::busy`]); a
//! session marks it logged in ([`Watch::logged_in`]), after which it is never closed
//! for stress. A connection closed for stress sees its [`Watch::evicted`] token
//! cancelled and ends as on an input timeout (its timeout reply, then the close).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::LimitsConfig;

#[derive(Clone, Copy, Debug)]
struct Settings {
    /// Percent of `max_clients`; 0 = stress mode off.
    threshold: usize,
    max_clients: usize,
    timeout: Duration,
}

/// A daemon's stress state: its setting, whether it is on, and every open connection's
/// idleness. Shared by the gate, the janitor and the connections.
#[derive(Debug)]
pub struct Stress {
    settings: Mutex<Settings>,
    on: AtomicBool,
    next: AtomicU64,
    /// Where idle times are measured from.
    epoch: Instant,
    /// Every open connection, for the janitor and the admission to look over; each
    /// connection updates its own state without this lock.
    conns: Mutex<HashMap<u64, Weak<WatchInner>>>,
}

/// What [`Stress::tick`] saw change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Stress mode began.
    Began,
    /// Stress mode ended.
    Ended,
}

impl Stress {
    /// Stress state for `limits` (`stress_threshold`, `max_clients`, `stress_timeout`).
    pub fn new(limits: &LimitsConfig) -> Arc<Stress> {
        Arc::new(Stress {
            settings: Mutex::new(Self::settings(limits)),
            on: AtomicBool::new(false),
            next: AtomicU64::new(0),
            epoch: Instant::now(),
            conns: Mutex::default(),
        })
    }

    fn settings(limits: &LimitsConfig) -> Settings {
        Settings {
            threshold: usize::from(limits.stress_threshold),
            max_clients: limits.max_clients,
            timeout: Duration::from_secs(limits.stress_timeout.max(1)),
        }
    }

    /// Takes new limits (SIGHUP).
    pub fn update(&self, limits: &LimitsConfig) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = Self::settings(limits);
    }

    fn current(&self) -> Settings {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether stress mode is configured at all.
    pub fn enabled(&self) -> bool {
        self.current().threshold > 0
    }

    /// Whether stress mode is on now.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Follows a new connection.
    pub fn watch(self: &Arc<Self>) -> Watch {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::new(WatchInner {
            id,
            stress: self.clone(),
            evict: CancellationToken::new(),
            idle_since: AtomicU64::new(BUSY),
            pre_login: AtomicBool::new(true),
        });
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Arc::downgrade(&inner));
        Watch { inner: Some(inner) }
    }

    /// Every open connection that has not logged in and waits for input, with when it
    /// began to wait.
    fn idle_before_login(&self) -> Vec<(Instant, Arc<WatchInner>)> {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns
            .values()
            .filter_map(Weak::upgrade)
            .filter(|w| w.pre_login.load(Ordering::Relaxed) && !w.evict.is_cancelled())
            .filter_map(|w| w.idle_since().map(|t| (t, w)))
            .collect()
    }

    /// Whether `open` connections put the daemon in stress mode (without switching it:
    /// the janitor's [`Stress::tick`] does, and logs and counts the change).
    pub fn pressing(&self, open: usize) -> bool {
        let s = self.current();
        s.threshold > 0 && open.saturating_mul(100) >= s.max_clients.saturating_mul(s.threshold)
    }

    /// Sets stress mode from `open` connections; while it is on, closes the connections
    /// that have waited for input without logging in for longer than `stress_timeout`.
    /// Called by the janitor every second and at each admission; returns a change.
    pub fn tick(&self, open: usize) -> Option<Change> {
        let s = self.current();
        let on = self.pressing(open);
        let was = self.on.swap(on, Ordering::Relaxed);
        if on {
            let now = Instant::now();
            for (since, w) in self.idle_before_login() {
                if now.duration_since(since) > s.timeout {
                    w.evict.cancel();
                }
            }
        }
        match (was, on) {
            (false, true) => Some(Change::Began),
            (true, false) => Some(Change::Ended),
            _ => None,
        }
    }

    /// Closes the connection that has waited longest for input without logging in (all
    /// places are taken and stress mode is on). Returns whether there was one.
    pub fn evict_oldest(&self) -> bool {
        if !self.enabled() {
            return false;
        }
        match self.idle_before_login().into_iter().min_by_key(|(t, _)| *t) {
            Some((_, w)) => {
                w.evict.cancel();
                true
            }
            None => false,
        }
    }

    /// The input timeout of a connection not logged in while stress mode is on.
    pub fn timeout(&self) -> Duration {
        self.current().timeout
    }
}

/// `idle_since` of a connection handling a command.
const BUSY: u64 = 0;

#[derive(Debug)]
struct WatchInner {
    id: u64,
    stress: Arc<Stress>,
    evict: CancellationToken,
    /// Waiting for input since this many nanoseconds after `stress.epoch`, plus one;
    /// [`BUSY`] while a command is being handled. Set at every line: an atomic, no lock.
    idle_since: AtomicU64,
    /// Not logged in (every SMTP session; POP3 until authenticated).
    pre_login: AtomicBool,
}

impl WatchInner {
    fn idle_since(&self) -> Option<Instant> {
        match self.idle_since.load(Ordering::Relaxed) {
            BUSY => None,
            n => Some(self.stress.epoch + Duration::from_nanos(n - 1)),
        }
    }
}

impl Drop for WatchInner {
    fn drop(&mut self) {
        self.stress.conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

/// One connection as stress mode sees it (cheap to clone; the last clone to go takes
/// the connection out of the table). [`Watch::none`] follows nothing (tests, tools).
#[derive(Clone, Debug, Default)]
pub struct Watch {
    inner: Option<Arc<WatchInner>>,
}

impl Watch {
    /// A watch that follows nothing and is never evicted.
    pub fn none() -> Watch {
        Watch { inner: None }
    }

    /// The connection is waiting for the client's input.
    pub fn idle(&self) {
        if let Some(w) = &self.inner {
            let since = u64::try_from(w.stress.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            w.idle_since.store(since + 1, Ordering::Relaxed);
        }
    }

    /// The client's input came; a command is being handled.
    pub fn busy(&self) {
        if let Some(w) = &self.inner {
            w.idle_since.store(BUSY, Ordering::Relaxed);
        }
    }

    /// The client logged in: never closed for stress from now on.
    pub fn logged_in(&self) {
        if let Some(w) = &self.inner {
            w.pre_login.store(false, Ordering::Relaxed);
        }
    }

    /// Cancelled when stress mode closes this connection.
    pub async fn evicted(&self) {
        match &self.inner {
            Some(w) => w.evict.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// The input timeout to use now: `normal`, or `stress_timeout` when stress mode is
    /// on and this connection has not logged in.
    pub fn input_timeout(&self, normal: Duration) -> Duration {
        match &self.inner {
            Some(w) if w.stress.is_on() && w.pre_login.load(Ordering::Relaxed) => normal.min(w.stress.timeout()),
            _ => normal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(threshold: u8, clients: usize) -> LimitsConfig {
        LimitsConfig { stress_threshold: threshold, stress_timeout: 1, max_clients: clients, ..LimitsConfig::default() }
    }

    #[tokio::test]
    async fn on_at_the_threshold_and_the_oldest_idle_pre_login_goes_first() {
        let s = Stress::new(&limits(50, 4));
        let (a, b, c) = (s.watch(), s.watch(), s.watch());
        assert_eq!(s.tick(1), None);
        assert!(!s.is_on());
        assert_eq!(s.tick(2), Some(Change::Began));
        a.idle();
        a.logged_in();
        tokio::time::sleep(Duration::from_millis(5)).await;
        b.idle();
        tokio::time::sleep(Duration::from_millis(5)).await;
        c.idle();
        assert!(s.evict_oldest());
        assert!(b.inner.as_ref().unwrap().evict.is_cancelled(), "b: oldest idle not logged in");
        assert!(!a.inner.as_ref().unwrap().evict.is_cancelled(), "a logged in");
        assert!(!c.inner.as_ref().unwrap().evict.is_cancelled());
        assert_eq!(b.input_timeout(Duration::from_secs(600)), Duration::from_secs(1));
        assert_eq!(a.input_timeout(Duration::from_secs(600)), Duration::from_secs(600), "a logged in");
        assert_eq!(s.tick(1), Some(Change::Ended));
        drop((a, b, c));
        assert!(s.conns.lock().unwrap().is_empty(), "watches leave the table");
    }

    #[tokio::test]
    async fn idle_past_the_stress_timeout_is_closed_by_the_tick() {
        let s = Stress::new(&limits(10, 10));
        let w = s.watch();
        w.idle();
        let busy = s.watch();
        assert_eq!(s.tick(2), Some(Change::Began));
        assert!(!w.inner.as_ref().unwrap().evict.is_cancelled());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        s.tick(2);
        assert!(w.inner.as_ref().unwrap().evict.is_cancelled());
        assert!(!busy.inner.as_ref().unwrap().evict.is_cancelled(), "not waiting for input");
        let off = Stress::new(&limits(0, 10));
        assert_eq!(off.tick(10), None, "threshold 0: never on");
    }
}
