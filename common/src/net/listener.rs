//! The accept loop every daemon uses (style.md P3, P5, P13): one task per listener;
//! admission by the [`Gate`] (a client it refuses gets the daemon's line for that cause
//! and is closed; `accept` never stalls); one tracked task per connection inside a
//! `conn` span; a janitor sweeping the gate's rate state every minute; a stop when the
//! shutdown token is cancelled.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::net::gate::{Gate, Refusal};
use crate::shutdown::Shutdown;
use crate::stats::Stats;

/// How often the janitor forgets stale rate-limit state.
const JANITOR_PERIOD: Duration = Duration::from_secs(60);

/// The protocol lines a refused client gets, one per cause (complete, CRLF-ended).
#[derive(Clone, Debug)]
pub struct Refusals {
    /// Over `max_clients`.
    pub too_many_clients: Vec<u8>,
    /// Over `max_per_address`.
    pub too_many_from_address: Vec<u8>,
    /// Over `connection_rate`.
    pub rate_exceeded: Vec<u8>,
}

impl Refusals {
    /// The three refusals, each the line `line` makes of its text ("Too many clients,
    /// try again later", "Too many connections from your address", "Connection rate
    /// exceeded, try again later") in the protocol's form.
    pub fn new(line: impl Fn(&str) -> Vec<u8>) -> Refusals {
        Refusals {
            too_many_clients: line("Too many clients, try again later"),
            too_many_from_address: line("Too many connections from your address"),
            rate_exceeded: line("Connection rate exceeded, try again later"),
        }
    }

    fn line(&self, r: Refusal) -> &[u8] {
        match r {
            Refusal::TooManyClients => &self.too_many_clients,
            Refusal::TooManyFromAddress => &self.too_many_from_address,
            Refusal::RateExceeded => &self.rate_exceeded,
        }
    }
}

/// A bound listener and whether it speaks implicit TLS.
#[derive(Debug)]
pub struct Listener {
    /// The socket.
    pub socket: TcpListener,
    /// True for implicit-TLS listeners (`[listen] tls_addresses`).
    pub implicit_tls: bool,
}

/// Accepts on every listener until `shutdown` is cancelled; returns when all loops have
/// stopped. Each admitted connection runs `handler(stream, peer, implicit_tls)` in a task
/// tracked by `shutdown.tracker` and keeps its [`Gate`] admission until it ends. A
/// refused one gets its line of `refusals` and is closed (with `None`, closed at once:
/// for protocols whose server never speaks first).
///
/// Counts (spec/mail.md §3.10, §4.6): `total|connections`, `current|connections` and
/// `who|<address>` per admitted connection (the last two taken back when it ends), and
/// `failed|limits|<address>` per refusal.
pub async fn accept<H, F>(
    listeners: Vec<Listener>,
    gate: Arc<Gate>,
    refusals: Option<Refusals>,
    stats: Stats,
    shutdown: Shutdown,
    handler: H,
) where
    H: Fn(TcpStream, SocketAddr, bool) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = io::Result<()>> + Send + 'static,
{
    let refusals = Arc::new(refusals);
    let proto = stats.daemon();
    let mut loops = tokio::task::JoinSet::new();
    {
        let (gate, token, stats) = (gate.clone(), shutdown.token.clone(), stats.clone());
        loops.spawn(async move {
            let mut tick = tokio::time::interval(JANITOR_PERIOD);
            let mut gauges = tokio::time::interval(crate::stats::GAUGE_PERIOD);
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    _ = tick.tick() => gate.sweep(),
                    // Heals a gauge whose last update was lost.
                    _ = gauges.tick() => stats.gauges(gate.open()),
                }
            }
        });
    }
    for l in listeners {
        if let Ok(addr) = l.socket.local_addr() {
            tracing::info!(%addr, tls = l.implicit_tls, proto, "listening");
        }
        let (gate, refusals, shutdown, handler, stats) =
            (gate.clone(), refusals.clone(), shutdown.clone(), handler.clone(), stats.clone());
        loops.spawn(async move {
            let mut next_id: u64 = 0;
            loop {
                let accepted = tokio::select! {
                    () = shutdown.token.cancelled() => return,
                    a = l.socket.accept() => a,
                };
                let (mut stream, peer) = match accepted {
                    // An IPv4 client of a dual-stack `[::]` listener arrives as
                    // `::ffff:a.b.c.d`: every rule, counter and trace field sees a.b.c.d.
                    Ok((s, p)) => (s, SocketAddr::new(p.ip().to_canonical(), p.port())),
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(cause = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                next_id += 1;
                let span = tracing::info_span!("conn", proto, peer = %peer, id = next_id);
                let admission = match gate.admit(peer.ip()) {
                    Ok(a) => a,
                    Err(refusal) => {
                        stats.failed("limits", &peer.ip().to_string());
                        let refusals = refusals.clone();
                        shutdown.tracker.spawn(
                            async move {
                                tracing::warn!(cause = ?refusal, "connection refused");
                                if let Some(refusals) = refusals.as_ref() {
                                    let line = refusals.line(refusal);
                                    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(line)).await;
                                }
                            }
                            .instrument(span),
                        );
                        continue;
                    }
                };
                let who = admission.key().to_string();
                stats.connection_opened(&who, gate.open(), admission.from_key());
                let fut = handler(stream, peer, l.implicit_tls);
                let (stats, gate) = (stats.clone(), gate.clone());
                shutdown.tracker.spawn(
                    async move {
                        tracing::debug!("connected");
                        if let Err(e) = fut.await {
                            tracing::info!(cause = %e, "connection ended");
                        }
                        let remaining = admission.release();
                        stats.connection_closed(&who, gate.open(), remaining);
                    }
                    .instrument(span),
                );
            }
        });
    }
    while loops.join_next().await.is_some() {}
}
