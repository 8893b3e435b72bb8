//! Admission of new connections (spec/mail.md §8.2, §8.3; style.md P13): per-address
//! connection rate (a governor keyed limiter, swept by a janitor so memory follows live
//! attackers, not every address ever seen), simultaneous connections per address (IPv6
//! grouped by prefix), and the daemon-wide client cap (a semaphore). Checked in that
//! order; a refused connection counts nowhere. Limits can be replaced at runtime
//! (SIGHUP) without touching admitted connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::LimitsConfig;

type KeyedLimiter = RateLimiter<
    IpAddr,
    governor::state::keyed::HashMapStateStore<IpAddr>,
    governor::clock::DefaultClock,
    governor::middleware::NoOpMiddleware<<governor::clock::DefaultClock as governor::clock::Clock>::Instant>,
>;

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `max_clients` connections are open.
    TooManyClients,
    /// `max_per_address` connections from this address (network) are open.
    TooManyFromAddress,
    /// More than `connection_rate` connections in `connection_period` from it.
    RateExceeded,
}

/// The address a client is counted under: IPv4 as is (IPv4-mapped IPv6 too), IPv6 cut
/// to its first `prefix` bits.
pub fn address_key(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6);
                let prefix = u32::from(prefix.min(128));
                let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
                IpAddr::V6((bits & mask).into())
            }
        },
    }
}

struct Settings {
    max_per_address: u32,
    ipv6_prefix: u8,
    rate: Option<KeyedLimiter>,
    max_clients: usize,
}

/// Admission state shared by a daemon's accept loops.
pub struct Gate {
    /// Stress mode: connections' idleness, and whether it is on.
    pub stress: Arc<crate::net::stress::Stress>,
    settings: RwLock<Settings>,
    per_address: Arc<Mutex<HashMap<IpAddr, u32>>>,
    slots: Arc<Semaphore>,
    /// Connections admitted and not yet released.
    open: Arc<AtomicUsize>,
}

/// Held by an admitted connection; releases its places when dropped (or by
/// [`Admission::release`], which also tells how many connections from its address
/// remain).
pub struct Admission {
    _slot: OwnedSemaphorePermit,
    key: IpAddr,
    per_address: Arc<Mutex<HashMap<IpAddr, u32>>>,
    open: Arc<AtomicUsize>,
    from_key: u32,
    released: bool,
}

impl Admission {
    /// The address this connection is counted under (see [`address_key`]).
    pub fn key(&self) -> IpAddr {
        self.key
    }

    /// Connections open from this address, this one included, when it was admitted.
    pub fn from_key(&self) -> u32 {
        self.from_key
    }

    /// Gives the places back; returns the connections still open from this address.
    pub fn release(mut self) -> u32 {
        self.released = true;
        self.decrement()
    }

    fn decrement(&self) -> u32 {
        self.open.fetch_sub(1, Ordering::SeqCst);
        let mut map = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let Some(n) = map.get_mut(&self.key) else { return 0 };
        *n = n.saturating_sub(1);
        let left = *n;
        if left == 0 {
            map.remove(&self.key);
        }
        left
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.released {
            self.decrement();
        }
    }
}

fn rate_limiter(limits: &LimitsConfig) -> Option<KeyedLimiter> {
    let burst = NonZeroU32::new(limits.connection_rate)?;
    let period = Duration::from_secs(limits.connection_period.max(1)) / limits.connection_rate;
    let quota = Quota::with_period(period.max(Duration::from_nanos(1)))?.allow_burst(burst);
    Some(RateLimiter::hashmap(quota))
}

impl Gate {
    /// A gate enforcing `limits`.
    pub fn new(limits: &LimitsConfig) -> Arc<Gate> {
        Arc::new(Gate {
            stress: crate::net::stress::Stress::new(limits),
            settings: RwLock::new(Settings {
                max_per_address: limits.max_per_address,
                ipv6_prefix: limits.ipv6_prefix,
                rate: rate_limiter(limits),
                max_clients: limits.max_clients,
            }),
            per_address: Arc::default(),
            slots: Arc::new(Semaphore::new(limits.max_clients)),
            open: Arc::default(),
        })
    }

    /// Replaces the limits (SIGHUP). Admitted connections keep their places; a smaller
    /// `max_clients` takes effect as they leave. Rate counts start afresh when the rate
    /// settings change.
    pub fn update(&self, limits: &LimitsConfig) {
        self.stress.update(limits);
        let mut s = self.settings.write().unwrap_or_else(|p| p.into_inner());
        if limits.max_clients > s.max_clients {
            self.slots.add_permits(limits.max_clients - s.max_clients);
        } else {
            let mut excess = s.max_clients - limits.max_clients;
            excess -= self.slots.forget_permits(excess);
            // Permits still in use are retired as connections end.
            if excess > 0 {
                let slots = self.slots.clone();
                tokio::spawn(async move {
                    if let Ok(p) = slots.acquire_many_owned(u32::try_from(excess).unwrap_or(u32::MAX)).await {
                        p.forget();
                    }
                });
            }
        }
        s.max_clients = limits.max_clients;
        s.max_per_address = limits.max_per_address;
        s.ipv6_prefix = limits.ipv6_prefix;
        s.rate = rate_limiter(limits);
    }

    /// Admits a connection from `ip` or says why not.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn admit(&self, ip: IpAddr) -> Result<Admission, Refusal> {
        {
            let s = self.settings.read().unwrap_or_else(|p| p.into_inner());
            let key = address_key(ip, s.ipv6_prefix);
            if let Some(rate) = &s.rate
                && rate.check_key(&key).is_err()
            {
                return Err(Refusal::RateExceeded);
            }
        }
        self.place(ip)
    }

    /// [`Gate::admit`], and in stress mode, when every place is taken, the connection
    /// that has waited longest for input without logging in is closed and this one
    /// takes its place (waiting up to 2 seconds for it to go).
    ///
    /// # Errors
    /// The [`Refusal`].
    pub async fn admit_or_evict(&self, ip: IpAddr) -> Result<Admission, Refusal> {
        let refusal = match self.admit(ip) {
            Err(Refusal::TooManyClients) => Refusal::TooManyClients,
            other => return other,
        };
        if !self.stress.pressing(self.open()) || !self.stress.evict_oldest() {
            return Err(refusal);
        }
        tracing::info!("stress: closed the longest-idle connection not logged in for a new client");
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            match self.place(ip) {
                Err(Refusal::TooManyClients) if tokio::time::Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => return other,
            }
        }
    }

    /// The places: per address, then daemon-wide.
    fn place(&self, ip: IpAddr) -> Result<Admission, Refusal> {
        let s = self.settings.read().unwrap_or_else(|p| p.into_inner());
        let key = address_key(ip, s.ipv6_prefix);
        let mut map = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.get(&key).copied().unwrap_or(0);
        if s.max_per_address > 0 && n >= s.max_per_address {
            return Err(Refusal::TooManyFromAddress);
        }
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| Refusal::TooManyClients)?;
        map.insert(key, n + 1);
        self.open.fetch_add(1, Ordering::SeqCst);
        Ok(Admission {
            _slot: slot,
            key,
            per_address: self.per_address.clone(),
            open: self.open.clone(),
            from_key: n + 1,
            released: false,
        })
    }

    /// Connections admitted and still open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Forgets rate-limit state that no longer limits anyone (the janitor's job).
    pub fn sweep(&self) {
        let s = self.settings.read().unwrap_or_else(|p| p.into_inner());
        if let Some(rate) = &s.rate {
            rate.retain_recent();
            rate.shrink_to_fit();
        }
    }

    /// Addresses with rate-limit state, and addresses with open connections (to show
    /// that memory stays bounded).
    pub fn tracked(&self) -> (usize, usize) {
        let s = self.settings.read().unwrap_or_else(|p| p.into_inner());
        let rate = s.rate.as_ref().map_or(0, |r| r.len());
        (rate, self.per_address.lock().unwrap_or_else(|p| p.into_inner()).len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_address: u32, rate: u32, clients: usize) -> LimitsConfig {
        LimitsConfig {
            max_per_address: per_address,
            connection_rate: rate,
            connection_period: 1,
            max_clients: clients,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn ipv6_is_grouped_by_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a, 64), address_key(b, 64));
        assert_ne!(address_key(a, 64), address_key(c, 64));
        assert_ne!(address_key(a, 128), address_key(b, 128));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_key(mapped, 64), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn per_address_then_total() {
        let g = Gate::new(&limits(2, 0, 3));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = g.admit(ip).unwrap();
        let _b = g.admit(ip).unwrap();
        assert_eq!(g.admit(ip).err(), Some(Refusal::TooManyFromAddress));
        let _c = g.admit("192.0.2.2".parse().unwrap()).unwrap();
        assert_eq!(g.admit("192.0.2.3".parse().unwrap()).err(), Some(Refusal::TooManyClients));
        drop(a);
        assert!(g.admit(ip).is_ok(), "a place frees when a connection ends");
        g.update(&limits(2, 0, 10));
        assert!(g.admit("192.0.2.4".parse().unwrap()).is_ok(), "SIGHUP raised max_clients");
    }

    #[tokio::test]
    async fn reload_lowering_max_clients_takes_effect_as_connections_leave() {
        let g = Gate::new(&limits(0, 0, 3));
        let held: Vec<_> = (1..=3u8).map(|i| g.admit(IpAddr::from([192, 0, 2, i])).unwrap()).collect();
        g.update(&limits(0, 0, 1));
        drop(held);
        tokio::task::yield_now().await; // the retiring task takes the freed places
        tokio::time::sleep(Duration::from_millis(50)).await;
        let one = g.admit("192.0.2.9".parse().unwrap()).unwrap();
        assert_eq!(g.admit("192.0.2.10".parse().unwrap()).err(), Some(Refusal::TooManyClients));
        drop(one);
        assert!(g.admit("192.0.2.11".parse().unwrap()).is_ok());
    }

    #[tokio::test]
    async fn rate_per_address_and_bounded_state() {
        let g = Gate::new(&limits(0, 3, 100_000));
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..3 {
            drop(g.admit(ip).unwrap());
        }
        assert_eq!(g.admit(ip).err(), Some(Refusal::RateExceeded));
        for i in 0..5000u32 {
            let ip = IpAddr::V4((0x0a00_0000 + i).into());
            drop(g.admit(ip).unwrap());
        }
        assert_eq!(g.tracked(), (5001, 0));
        // governor keeps a key until one emission interval (1/3 s) after its arrival time.
        std::thread::sleep(Duration::from_millis(1500));
        g.sweep();
        assert_eq!(g.tracked(), (0, 0), "the janitor forgets addresses that no longer matter");
        assert!(g.admit(ip).is_ok(), "the window has passed");
    }
}
