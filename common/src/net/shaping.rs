//! Bandwidth shaping (spec/mail.md §8.1): token buckets (governor) per connection and
//! daemon-wide, for input and output separately, in KiB/s (1 KiB = 1024 bytes), 0 =
//! unlimited. One wrapper, [`Shaped`], sits between the socket and everything above it,
//! so every protocol and TLS are shaped alike.
//!
//! Each bucket holds one second of traffic. Data moves in chunks of at most 16 KiB and
//! one bucket's capacity. A write takes the chunk's tokens from its connection bucket
//! and the global one first, sleeping until they are there (tokens a short write did not
//! use are kept). A read pays afterwards: before the next read, for the bytes the last
//! one brought, so a connection waiting for its peer costs nothing and the peer is held
//! back by TCP meanwhile. The buckets read tokio's clock, so tests can pause time.

use std::future::Future;
use std::io;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::config::{Problems, Validate};

/// Largest chunk moved per grant, bytes.
const MAX_CHUNK: usize = 16 * 1024;

/// `[shaping]`: bandwidth limits in KiB/s; 0 = unlimited.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShapingConfig {
    /// Per connection, client to server.
    #[serde(default)]
    pub per_connection_in: u32,
    /// Per connection, server to client.
    #[serde(default)]
    pub per_connection_out: u32,
    /// All connections together, client to server.
    #[serde(default)]
    pub global_in: u32,
    /// All connections together, server to client.
    #[serde(default)]
    pub global_out: u32,
}

impl Validate for ShapingConfig {
    fn validate(&self, p: &mut Problems) {
        for (key, v) in [
            ("shaping.per_connection_in", self.per_connection_in),
            ("shaping.per_connection_out", self.per_connection_out),
            ("shaping.global_in", self.global_in),
            ("shaping.global_out", self.global_out),
        ] {
            if v > 4_000_000 {
                p.add(key, "must be at most 4000000 KiB/s (0 = unlimited)");
            }
        }
    }
}

/// governor clock on tokio's time (pausable in tests).
#[derive(Clone, Debug)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        Self { origin: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

type Bucket = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

fn bucket(kib_per_s: u32, clock: &TokioClock) -> Option<Arc<Bucket>> {
    let bytes = NonZeroU32::new(kib_per_s.saturating_mul(1024))?;
    Some(Arc::new(RateLimiter::direct_with_clock(Quota::per_second(bytes), clock.clone())))
}

/// The daemon-wide part: global buckets and the per-connection rates.
#[derive(Debug)]
pub struct Shaper {
    clock: TokioClock,
    cfg: ShapingConfig,
    global_in: Option<Arc<Bucket>>,
    global_out: Option<Arc<Bucket>>,
}

impl Shaper {
    /// A shaper for `cfg`; call inside a tokio runtime.
    pub fn new(cfg: &ShapingConfig) -> Arc<Shaper> {
        let clock = TokioClock::default();
        Arc::new(Shaper {
            global_in: bucket(cfg.global_in, &clock),
            global_out: bucket(cfg.global_out, &clock),
            cfg: cfg.clone(),
            clock,
        })
    }

    /// Wraps one connection's stream.
    pub fn wrap<S>(&self, inner: S) -> Shaped<S> {
        let direction = |own: u32, global: &Option<Arc<Bucket>>, global_rate: u32| {
            let mut buckets: Vec<Arc<Bucket>> = bucket(own, &self.clock).into_iter().collect();
            buckets.extend(global.iter().cloned());
            let cap = [own, global_rate].into_iter().filter(|r| *r > 0).map(|r| r as usize * 1024).min();
            Direction::new(buckets, cap.unwrap_or(MAX_CHUNK).min(MAX_CHUNK), self.clock.clone())
        };
        Shaped {
            inner,
            read: direction(self.cfg.per_connection_in, &self.global_in, self.cfg.global_in),
            write: direction(self.cfg.per_connection_out, &self.global_out, self.cfg.global_out),
        }
    }
}

/// Token accounting for one direction of one connection.
struct Direction {
    buckets: Vec<Arc<Bucket>>,
    chunk: usize,
    clock: TokioClock,
    /// Amount being paid, and how many buckets have been charged for it.
    paying: usize,
    charged: usize,
    /// Writes: bytes already paid for. Reads: bytes read and not yet paid for.
    balance: usize,
    wait: Option<Pin<Box<Sleep>>>,
}

impl Direction {
    fn new(buckets: Vec<Arc<Bucket>>, chunk: usize, clock: TokioClock) -> Self {
        Self { buckets, chunk, clock, paying: 0, charged: 0, balance: 0, wait: None }
    }

    fn shaped(&self) -> bool {
        !self.buckets.is_empty()
    }

    /// Takes `n` tokens (n ≤ chunk) from every bucket, sleeping until they are there.
    /// Once started, a payment completes with its original amount.
    fn poll_pay(&mut self, cx: &mut Context<'_>, n: usize) -> Poll<()> {
        if self.paying == 0 {
            self.paying = n.clamp(1, self.chunk);
        }
        let cells = NonZeroU32::new(u32::try_from(self.paying).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        loop {
            if let Some(w) = self.wait.as_mut() {
                ready!(w.as_mut().poll(cx));
                self.wait = None;
            }
            let Some(b) = self.buckets.get(self.charged) else {
                self.charged = 0;
                self.paying = 0;
                return Poll::Ready(());
            };
            match b.check_n(cells) {
                Ok(Ok(())) => self.charged += 1,
                Ok(Err(not_until)) => {
                    let delay = not_until.wait_time_from(self.clock.now());
                    self.wait = Some(Box::pin(tokio::time::sleep(delay)));
                }
                // Cannot happen: payments never exceed a bucket's capacity. Move on
                // unshaped rather than stall the connection.
                Err(_) => self.charged += 1,
            }
        }
    }
}

/// A stream whose reads and writes are shaped by a [`Shaper`].
pub struct Shaped<S> {
    inner: S,
    read: Direction,
    write: Direction,
}

impl<S: AsyncRead + Unpin> AsyncRead for Shaped<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.read.shaped() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        // Reads pay afterwards: what the last read brought in is paid for before the
        // next one, so waiting for a peer that sends nothing costs no tokens, and the
        // peer is held back by TCP while we wait.
        while this.read.balance > 0 {
            let owed = this.read.balance.min(this.read.chunk);
            ready!(this.read.poll_pay(cx, owed));
            this.read.balance -= owed;
        }
        let n = buf.remaining().min(this.read.chunk);
        let mut limited = ReadBuf::new(&mut buf.initialize_unfilled()[..n]);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
        let got = limited.filled().len();
        buf.advance(got);
        this.read.balance = got;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Shaped<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if data.is_empty() || !this.write.shaped() {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        // Writes pay first; what a short write left unused is kept for the next one.
        if this.write.balance == 0 {
            let n = data.len().min(this.write.chunk);
            ready!(this.write.poll_pay(cx, n));
            this.write.balance = n;
        }
        let n = this.write.balance.min(data.len());
        let wrote = ready!(Pin::new(&mut this.inner).poll_write(cx, &data[..n]))?;
        this.write.balance -= wrote;
        Poll::Ready(Ok(wrote))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn cfg(pin: u32, pout: u32, gin: u32, gout: u32) -> ShapingConfig {
        ShapingConfig { per_connection_in: pin, per_connection_out: pout, global_in: gin, global_out: gout }
    }

    /// Sends `bytes` through a shaped writer (or reader) and returns the virtual seconds.
    async fn transfer(shaper: &Shaper, bytes: usize, shape_write: bool) -> f64 {
        let (a, b) = tokio::io::duplex(1 << 20);
        let start = tokio::time::Instant::now();
        let data = vec![7u8; bytes];
        if shape_write {
            let mut w = shaper.wrap(a);
            let mut r = b;
            let reader = tokio::spawn(async move {
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                got.len()
            });
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
            drop(w);
            assert_eq!(reader.await.unwrap(), bytes);
        } else {
            let mut w = a;
            let mut r = shaper.wrap(b);
            let writer = tokio::spawn(async move {
                w.write_all(&data).await.unwrap();
                w.shutdown().await.unwrap();
            });
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            writer.await.unwrap();
            assert_eq!(got.len(), bytes);
        }
        start.elapsed().as_secs_f64()
    }

    #[tokio::test(start_paused = true)]
    async fn per_connection_rates_in_virtual_time() {
        // 16 KiB/s with a full one-second bucket: 64 KiB take 3 s (16 KiB at once).
        let out = Shaper::new(&cfg(0, 16, 0, 0));
        let t = transfer(&out, 64 * 1024, true).await;
        assert!((2.9..3.1).contains(&t), "output took {t} s");
        let input = Shaper::new(&cfg(8, 0, 0, 0));
        let t = transfer(&input, 40 * 1024, false).await;
        assert!((3.9..4.1).contains(&t), "input took {t} s");
        let none = Shaper::new(&cfg(0, 0, 0, 0));
        assert!(transfer(&none, 1 << 20, true).await < 0.01);
    }

    #[tokio::test(start_paused = true)]
    async fn global_rate_is_shared() {
        // Two connections of 48 KiB each under a global 16 KiB/s: 96 KiB, 16 at once,
        // the rest at 16 KiB/s = 5 s for both together.
        let shaper = Shaper::new(&cfg(0, 0, 0, 16));
        let start = tokio::time::Instant::now();
        let (x, y) = tokio::join!(transfer(&shaper, 48 * 1024, true), transfer(&shaper, 48 * 1024, true));
        let total = start.elapsed().as_secs_f64();
        assert!((4.9..5.1).contains(&total), "both took {total} s ({x}, {y})");
    }
}
