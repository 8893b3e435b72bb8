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

use crate::bans::Bans;
use crate::net::gate::{Gate, Refusal};
use crate::net::proxy::ProxyNetworks;
use crate::net::stress::{Change, Watch};
use crate::shutdown::Shutdown;
use crate::stats::Flag;
use crate::stats::Stats;

/// `net.core.somaxconn`, the kernel's cap on a listen backlog; 4096 (Linux's default
/// since 5.4) where it cannot be read.
pub fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(4096)
}

/// A listening TCP socket on `addr`, non-blocking, with a queue of `backlog` completed
/// connections (`listen(2)`; [`somaxconn`] when `None`; the kernel caps it there).
/// `SO_REUSEADDR` is set, as Rust's own `TcpListener::bind` does.
///
/// # Errors
/// The socket, bind or listen error, naming `addr`.
pub fn bind(addr: SocketAddr, backlog: Option<u32>) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let named = |e: io::Error| io::Error::new(e.kind(), format!("bind {addr}: {e}"));
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(named)?;
    socket.set_reuse_address(true).map_err(named)?;
    socket.bind(&addr.into()).map_err(named)?;
    let backlog = backlog.unwrap_or_else(somaxconn);
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX)).map_err(named)?;
    socket.set_nonblocking(true).map_err(named)?;
    Ok(socket.into())
}

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
    /// A banned address (`[bans]`).
    pub banned: Vec<u8>,
}

impl Refusals {
    /// The refusals, each the line `line` makes of its text ("Too many clients, try
    /// again later", "Too many connections from your address", "Connection rate
    /// exceeded, try again later", and for a banned address "Too many failures from
    /// your address, try again later") in the protocol's form.
    pub fn new(line: impl Fn(&str) -> Vec<u8>) -> Refusals {
        Refusals {
            too_many_clients: line("Too many clients, try again later"),
            too_many_from_address: line("Too many connections from your address"),
            rate_exceeded: line("Connection rate exceeded, try again later"),
            banned: line("Too many failures from your address, try again later"),
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

/// A bound listener, whether it speaks implicit TLS, and which peers on it are proxies.
#[derive(Debug)]
pub struct Listener {
    /// The socket.
    pub socket: TcpListener,
    /// True for implicit-TLS listeners (`[listen] tls_addresses`).
    pub implicit_tls: bool,
    /// `[listen] proxy_networks`.
    pub proxies: ProxyNetworks,
}

/// Accepts on every listener until `shutdown` is cancelled; returns when all loops have
/// stopped. Each accepted connection gets a task tracked by `shutdown.tracker`: a peer in
/// the listener's `proxies` first names its client with a PROXY protocol header
/// (`crate::net::proxy`; closed without one), then the [`Gate`] admits the client or it
/// gets its line of `refusals` and is closed (with `None`, closed at once: for protocols
/// whose server never speaks first); an admitted one runs `handler(stream, client,
/// implicit_tls)` and keeps its admission until it ends. `accept` never waits for a
/// client.
///
/// Counts (spec/mail.md §3.10, §4.6): `total|connections`, `current|connections` and
/// `who|<address>` per admitted connection (the last two taken back when it ends), and
/// `failed|limits|<address>` per refusal, `failed|banned|<address>` per connection from a
/// banned address (refused before the gate, so it takes no place).
pub async fn accept<H, F>(
    listeners: Vec<Listener>,
    gate: Arc<Gate>,
    bans: Option<Arc<Bans>>,
    refusals: Option<Refusals>,
    stats: Stats,
    shutdown: Shutdown,
    handler: H,
) where
    H: Fn(TcpStream, SocketAddr, bool, Watch) -> F + Clone + Send + Sync + 'static,
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
            let mut stress = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    _ = tick.tick() => gate.sweep(),
                    _ = stress.tick() => match gate.stress.tick(gate.open()) {
                        Some(Change::Began) => {
                            tracing::warn!(open = gate.open(), "stress mode on: short timeouts before login");
                            stats.batch()
                                .update(Flag::Persistent, &["total", "stress"], 1)
                                .set(Flag::Volatile, &["current", "stress"], 1)
                                .send();
                        }
                        Some(Change::Ended) => {
                            tracing::info!(open = gate.open(), "stress mode off");
                            stats.batch().set(Flag::Volatile, &["current", "stress"], 0).send();
                        }
                        None => {}
                    },
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
        let (gate, refusals, shutdown, handler, stats, bans) =
            (gate.clone(), refusals.clone(), shutdown.clone(), handler.clone(), stats.clone(), bans.clone());
        if !l.proxies.is_empty() {
            tracing::info!(proxies = ?l.proxies, "PROXY protocol header required from these peers");
        }
        loops.spawn(async move {
            let mut next_id: u64 = 0;
            loop {
                let accepted = tokio::select! {
                    () = shutdown.token.cancelled() => return,
                    a = l.socket.accept() => a,
                };
                let (stream, peer) = match accepted {
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
                let via_proxy = l.proxies.trusts(peer.ip());
                let conn = Conn {
                    gate: gate.clone(),
                    bans: bans.clone(),
                    refusals: refusals.clone(),
                    stats: stats.clone(),
                    handler: handler.clone(),
                    implicit_tls: l.implicit_tls,
                    proto,
                    id: next_id,
                };
                shutdown.tracker.spawn(conn.run(stream, peer, via_proxy));
            }
        });
    }
    while loops.join_next().await.is_some() {}
}

/// One accepted connection on its way to the handler.
struct Conn<H> {
    gate: Arc<Gate>,
    bans: Option<Arc<Bans>>,
    refusals: Arc<Option<Refusals>>,
    stats: Stats,
    handler: H,
    implicit_tls: bool,
    proto: &'static str,
    id: u64,
}

impl<H, F> Conn<H>
where
    H: Fn(TcpStream, SocketAddr, bool, Watch) -> F,
    F: Future<Output = io::Result<()>> + Send + 'static,
{
    /// A proxy's connection first names its client (PROXY protocol, within
    /// [`HEADER_TIMEOUT`](crate::net::proxy::HEADER_TIMEOUT); without a valid header it is
    /// closed at once); then admission by the gate for that client, and the handler, or
    /// the refusal line. The task holds the admission until the handler returns.
    async fn run(self, mut stream: TcpStream, peer: SocketAddr, via_proxy: bool) {
        let Conn { gate, bans, refusals, stats, handler, implicit_tls, proto, id } = self;
        let client = if via_proxy {
            match tokio::time::timeout(crate::net::proxy::HEADER_TIMEOUT, crate::net::proxy::read_header(&mut stream))
                .await
            {
                Ok(Ok(Some(c))) => SocketAddr::new(c.ip().to_canonical(), c.port()),
                Ok(Ok(None)) => peer,
                Ok(Err(e)) => {
                    tracing::warn!(proto, %peer, cause = %e, "connection from a proxy closed");
                    return;
                }
                Err(_) => {
                    tracing::warn!(proto, %peer, "connection from a proxy closed: no PROXY header in time");
                    return;
                }
            }
        } else {
            peer
        };
        let span = if via_proxy {
            tracing::info_span!("conn", proto, peer = %client, proxy = %peer, id)
        } else {
            tracing::info_span!("conn", proto, peer = %client, id)
        };
        async move {
            if let Some(until) = bans.as_ref().and_then(|b| b.banned(client.ip())) {
                stats.failed("banned", &client.ip().to_string());
                tracing::info!(until, "connection refused: banned");
                if let Some(refusals) = refusals.as_ref() {
                    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&refusals.banned)).await;
                }
                return;
            }
            let admission = match gate.admit_or_evict(client.ip()).await {
                Ok(a) => a,
                Err(refusal) => {
                    stats.failed("limits", &client.ip().to_string());
                    tracing::warn!(cause = ?refusal, "connection refused");
                    if let Some(refusals) = refusals.as_ref() {
                        let line = refusals.line(refusal);
                        let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(line)).await;
                    }
                    return;
                }
            };
            let who = admission.key().to_string();
            stats.connection_opened(&who, gate.open(), admission.from_key());
            tracing::debug!("connected");
            let watch = gate.stress.watch();
            if let Err(e) = handler(stream, client, implicit_tls, watch).await {
                tracing::info!(cause = %e, "connection ended");
            }
            let remaining = admission.release();
            stats.connection_closed(&who, gate.open(), remaining);
        }
        .instrument(span)
        .await;
    }
}
