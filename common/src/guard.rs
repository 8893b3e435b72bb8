//! Fair password checks under attack (issue 13). Every Argon2id verification costs
//! tens of milliseconds of CPU and 64 MiB, so a daemon runs only a few at once; this
//! module decides who goes next, so that guessing from some addresses does not keep
//! everyone else out:
//!
//! - at most one verification per client address (IPv6: per `ipv6_prefix` network) runs
//!   at a time; an address's further logins wait behind it;
//! - among the waiting, an address with fewer recent failures goes first, then one with
//!   fewer logins waiting (a guesser opens many connections at once, a user one), then
//!   first come, first served; so a client that has not failed waits for about one
//!   verification to finish;
//! - a failed login is answered after a delay that grows with its address's recent
//!   failures ([`Logins::tarpit`]).
//!
//! Failures are remembered per address for `window` seconds; at most `capacity`
//! addresses are tracked, the least recently failing forgotten first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hashlink::LruCache;
use tokio::sync::oneshot;

/// Events per key within a sliding window (failed logins, accepted messages, ban
/// strikes): for each key the times of its recent events, oldest first; at most
/// `capacity` keys, the least recently recorded forgotten first (an LRU cache, O(1)
/// whatever its size). An event older than the window, or as old (a zero window
/// forgets at once), no longer counts.
pub struct Recent<K> {
    inner: Mutex<(LruCache<K, VecDeque<std::time::Instant>>, Duration)>,
}

impl<K> std::fmt::Debug for Recent<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.inner.lock().map_or(0, |g| g.0.len());
        f.debug_struct("Recent").field("keys", &keys).finish()
    }
}

impl<K: std::hash::Hash + Eq + Clone> Recent<K> {
    /// At most `capacity` keys (at least 1), events counted for `window`.
    pub fn new(capacity: usize, window: Duration) -> Recent<K> {
        Recent { inner: Mutex::new((LruCache::new(capacity.max(1)), window)) }
    }

    /// Takes new settings (SIGHUP); the events so far are kept.
    pub fn set(&self, capacity: usize, window: Duration) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.set_capacity(capacity.max(1));
        g.1 = window;
    }

    fn prune(times: &mut VecDeque<std::time::Instant>, window: Duration) {
        let now = std::time::Instant::now();
        while times.front().is_some_and(|t| now.duration_since(*t) >= window) {
            times.pop_front();
        }
    }

    /// Events of `key` within the window. Looking is not recording: the key keeps its
    /// place in the eviction order.
    pub fn count(&self, key: &K) -> usize {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let window = g.1;
        let Some(times) = g.0.peek_mut(key) else { return 0 };
        Self::prune(times, window);
        times.len()
    }

    /// Records an event of `key` now, keeping at most `keep` of its times (only counts
    /// up to a limit matter); returns its events within the window, this one included.
    pub fn record(&self, key: K, keep: usize) -> usize {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let window = g.1;
        let times = match g.0.get_mut(&key) {
            Some(t) => t,
            None => {
                g.0.insert(key.clone(), VecDeque::new());
                g.0.get_mut(&key).expect("just inserted")
            }
        };
        Self::prune(times, window);
        times.push_back(std::time::Instant::now());
        while times.len() > keep.max(1) {
            times.pop_front();
        }
        times.len()
    }

    /// Forgets the events of `key`.
    pub fn clear(&self, key: &K) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.remove(key);
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Addresses whose failures are remembered, at most.
pub const CAPACITY: usize = 16_384;

/// The longest a failed login's answer is delayed.
pub const MAX_TARPIT: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Waiter {
    key: IpAddr,
    failures: usize,
    seq: u64,
    go: oneshot::Sender<Turn>,
}

#[derive(Debug, Default)]
struct Queue {
    /// Verifications allowed at once.
    slots: usize,
    running: usize,
    per_address: HashMap<IpAddr, usize>,
    waiting: Vec<Waiter>,
    seq: u64,
}

/// A daemon's login fairness: its verification slots, its queue, and the recent
/// failures per address. Shared by all its sessions and kept across SIGHUP.
#[derive(Debug)]
pub struct Logins {
    queue: Mutex<Queue>,
    failures: Recent<IpAddr>,
    /// Tarpit per recent failure, milliseconds.
    step_ms: AtomicU64,
}

/// A running verification's place; the next waiter goes when it is dropped.
#[derive(Debug)]
pub struct Turn {
    /// `None` once the place was given back another way.
    logins: Option<Arc<Logins>>,
    key: IpAddr,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(logins) = self.logins.take() else { return };
        let mut q = logins.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.running = q.running.saturating_sub(1);
        if let Some(n) = q.per_address.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                q.per_address.remove(&self.key);
            }
        }
        Logins::dispatch(&logins, &mut q);
    }
}

impl Logins {
    /// `slots` verifications at once (at least 1); failures remembered for `window`;
    /// each remembered failure adds `step` to the delay of the next failed answer.
    pub fn new(slots: usize, window: Duration, step: Duration) -> Arc<Logins> {
        let queue = Queue { slots: slots.max(1), ..Queue::default() };
        Arc::new(Logins {
            queue: Mutex::new(queue),
            failures: Recent::new(CAPACITY, window),
            step_ms: AtomicU64::new(millis(step)),
        })
    }

    /// Takes new settings (SIGHUP); the queue and the failures stay.
    pub fn update(self: &Arc<Self>, slots: usize, window: Duration, step: Duration) {
        self.step_ms.store(millis(step), Ordering::Relaxed);
        self.failures.set(CAPACITY, window);
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.slots = slots.max(1);
        Logins::dispatch(self, &mut q);
    }

    /// Starts waiters while there are free slots: the best eligible first (fewest
    /// failures, then earliest), skipping addresses with a verification running and
    /// waiters that left. The turn travels in the channel: a waiter that leaves after
    /// it was sent drops it, which gives the place back.
    fn dispatch(this: &Arc<Logins>, q: &mut Queue) {
        while q.running < q.slots {
            let waiting = Self::waiting_per_address(q);
            let best = q
                .waiting
                .iter()
                .enumerate()
                .filter(|(_, w)| !q.per_address.contains_key(&w.key))
                .min_by_key(|(_, w)| (w.failures, waiting.get(&w.key).copied().unwrap_or(0), w.seq))
                .map(|(i, _)| i);
            let Some(i) = best else { return };
            let w = q.waiting.swap_remove(i);
            q.running += 1;
            *q.per_address.entry(w.key).or_default() += 1;
            if let Err(mut turn) = w.go.send(Turn { logins: Some(this.clone()), key: w.key }) {
                // The waiter left: undo here (dropping the turn would take the lock again).
                turn.logins = None;
                q.running -= 1;
                if let Some(n) = q.per_address.get_mut(&w.key) {
                    *n -= 1;
                    if *n == 0 {
                        q.per_address.remove(&w.key);
                    }
                }
            }
        }
    }

    /// How many logins wait per address: among addresses with as many failures, the one
    /// with fewer logins waiting goes first (a guesser opens many connections at once;
    /// a user, one).
    fn waiting_per_address(q: &Queue) -> HashMap<IpAddr, usize> {
        let mut n: HashMap<IpAddr, usize> = HashMap::new();
        for w in &q.waiting {
            *n.entry(w.key).or_default() += 1;
        }
        n
    }

    /// Waits for a turn to verify a password for a client counted under `key` (see
    /// `crate::net::gate::address_key`). Cancel-safe: a waiter that gives up leaves the
    /// queue.
    pub async fn turn(self: &Arc<Self>, key: IpAddr) -> Turn {
        let failures = self.failures(key);
        let rx = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.waiting.retain(|w| !w.go.is_closed());
            let waiting = Self::waiting_per_address(&q);
            let mine = waiting.get(&key).copied().unwrap_or(0) + 1;
            let ahead = q.waiting.iter().any(|w| {
                !q.per_address.contains_key(&w.key)
                    && (w.failures, waiting.get(&w.key).copied().unwrap_or(0)) <= (failures, mine)
            });
            if q.running < q.slots && !q.per_address.contains_key(&key) && !ahead {
                q.running += 1;
                *q.per_address.entry(key).or_default() += 1;
                return Turn { logins: Some(self.clone()), key };
            }
            let (go, rx) = oneshot::channel();
            q.seq += 1;
            let seq = q.seq;
            q.waiting.push(Waiter { key, failures, seq, go });
            rx
        };
        match rx.await {
            Ok(turn) => turn,
            // Unreachable: a waiter is removed only by sending it its turn, or once it
            // has left. Should it happen, take a place anyway rather than hang.
            Err(_) => {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                q.running += 1;
                *q.per_address.entry(key).or_default() += 1;
                Turn { logins: Some(self.clone()), key }
            }
        }
    }

    /// Recent failures (within the window) of `key`.
    pub fn failures(&self, key: IpAddr) -> usize {
        self.failures.count(&key)
    }

    /// Records a failed login from `key`; returns its recent failures, this one included
    /// (counted up to 1024: the tarpit is capped long before).
    pub fn failed(&self, key: IpAddr) -> usize {
        self.failures.record(key, 1024)
    }

    /// How long to hold back the answer to a failed login from `key`: `step` per recent
    /// failure, at most [`MAX_TARPIT`].
    pub fn tarpit(&self, key: IpAddr) -> Duration {
        let step = Duration::from_millis(self.step_ms.load(Ordering::Relaxed));
        step.saturating_mul(u32::try_from(self.failures(key)).unwrap_or(u32::MAX)).min(MAX_TARPIT)
    }

    /// Verifications running and waiting (for tests and the benchmark).
    pub fn load(&self) -> (usize, usize) {
        let q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        (q.running, q.waiting.len())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    /// Asks for a turn from each address of `from`, in that order (each asking once the
    /// one before it is queued); each task records its address when its turn comes and
    /// holds the turn for 10 ms.
    async fn queue_up(l: &Arc<Logins>, from: &[u8]) -> (Arc<Mutex<Vec<u8>>>, Vec<tokio::task::JoinHandle<()>>) {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for &n in from {
            let (l, order) = (l.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let t = l.turn(ip(n)).await;
                order.lock().unwrap().push(n);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(t);
            }));
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
        }
        (order, tasks)
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_address_goes_before_failing_ones_and_one_per_address_runs() {
        let l = Logins::new(2, Duration::from_secs(60), Duration::from_secs(1));
        for _ in 0..3 {
            l.failed(ip(1));
            l.failed(ip(2));
        }
        let first = l.turn(ip(1)).await;
        // Asked in this order: a failing address twice (it has a turn running, so both
        // wait), another failing one (a slot is free: it runs), a clean one (waits for a
        // slot, but goes before the first address's two).
        let (order, tasks) = queue_up(&l, &[1, 1, 2, 3]).await;
        assert_eq!(l.load(), (2, 3));
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![2, 3, 1, 1], "the clean address before the waiting ones");
        assert_eq!(l.load(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn among_equals_an_address_with_fewer_waiting_goes_first() {
        let l = Logins::new(1, Duration::from_secs(60), Duration::ZERO);
        let first = l.turn(ip(9)).await;
        // A burst of a guesser's connections, none failed yet, then one user.
        let (order, tasks) = queue_up(&l, &[1, 1, 1, 2]).await;
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![2, 1, 1, 1]);
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_frees_its_place() {
        let l = Logins::new(1, Duration::from_secs(60), Duration::ZERO);
        let first = l.turn(ip(1)).await;
        let gone = tokio::time::timeout(Duration::from_millis(20), l.turn(ip(2))).await;
        assert!(gone.is_err());
        drop(first);
        let _next = tokio::time::timeout(Duration::from_secs(1), l.turn(ip(3))).await.expect("not blocked");
    }

    #[tokio::test]
    async fn failures_expire_and_the_tarpit_grows_to_a_cap() {
        let l = Logins::new(2, Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(l.tarpit(ip(1)), Duration::ZERO);
        assert_eq!(l.failed(ip(1)), 1);
        assert_eq!(l.failed(ip(1)), 2);
        assert_eq!(l.tarpit(ip(1)), Duration::from_secs(2));
        for _ in 0..100 {
            l.failed(ip(1));
        }
        assert_eq!(l.tarpit(ip(1)), MAX_TARPIT);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(l.failures(ip(1)), 0, "the window passed");
    }
}
