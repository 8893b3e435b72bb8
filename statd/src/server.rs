//! mmstatd at work: the datagram receiver, the query socket, the journal sync and
//! snapshot timers, and the Prometheus endpoint, all around one [`State`] behind a
//! mutex (held only for in-memory work and buffered writes, never across an await or a
//! sync to disk).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::stats::MAX_DATAGRAM;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixDatagram, UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, StatdConfig};
use crate::persist::{self, Journal, now};
use crate::query;
use crate::record::{Malformed, parse_datagram};
use crate::state::State;
use crate::table::Refused;

/// Datagrams handled per lock acquisition, so queries get their turn under load.
const BURST: usize = 256;
/// A query connection silent this long is closed.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The sockets, bound while still root.
pub struct Sockets {
    /// Updates (`[stats] socket`).
    pub updates: std::os::unix::net::UnixDatagram,
    /// Queries (`[statd] query_socket`).
    pub queries: std::os::unix::net::UnixListener,
    /// Prometheus, when configured.
    pub prometheus: Option<std::net::TcpListener>,
    paths: Vec<PathBuf>,
}

impl Sockets {
    /// Removes the socket files (at exit).
    pub fn remove_files(&self) {
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn prepare_path(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    match std::fs::symlink_metadata(path) {
        // We hold the instance lock: a socket left here is a dead mmstatd's.
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => std::fs::remove_file(path)?,
        Ok(_) => anyhow::bail!("{} exists and is not a socket", path.display()),
        Err(_) => {}
    }
    Ok(())
}

/// The owner and group the socket files and the state directory get when mmstatd starts
/// as root: the configured user, and `socket_group` (else `[privileges] group`, else the
/// user's group).
fn ownership(cfg: &Config) -> anyhow::Result<Option<(nix::unistd::Uid, nix::unistd::Gid)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let Some(name) = &cfg.privileges.user else { return Ok(None) };
    let user = nix::unistd::User::from_name(name)?.ok_or_else(|| anyhow::anyhow!("unknown user {name:?}"))?;
    let group = match cfg.statd.socket_group.as_ref().or(cfg.privileges.group.as_ref()) {
        Some(g) => nix::unistd::Group::from_name(g)?.ok_or_else(|| anyhow::anyhow!("unknown group {g:?}"))?.gid,
        None => user.gid,
    };
    Ok(Some((user.uid, group)))
}

/// Binds both sockets (mode `socket_mode`, group as [`ownership`] says) and the
/// Prometheus listener, and creates the state directory owned by the user mmstatd will
/// run as. Call as root, before dropping privileges.
///
/// # Errors
/// A path that cannot be used, a bind failure.
pub fn bind(cfg: &Config) -> anyhow::Result<Sockets> {
    let mode = cfg.statd.mode().unwrap_or(0o660);
    let owner = ownership(cfg)?;
    let group_only = match (&owner, &cfg.statd.socket_group) {
        (None, Some(g)) => {
            Some(nix::unistd::Group::from_name(g)?.ok_or_else(|| anyhow::anyhow!("unknown group {g:?}"))?.gid)
        }
        _ => None,
    };
    let finish = |path: &Path| -> anyhow::Result<()> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        if let Some((u, g)) = owner {
            nix::unistd::chown(path, Some(u), Some(g))?;
        } else if let Some(g) = group_only {
            nix::unistd::chown(path, None, Some(g))?;
        }
        Ok(())
    };
    let updates_path = cfg.stats.socket.clone();
    prepare_path(&updates_path)?;
    let updates = std::os::unix::net::UnixDatagram::bind(&updates_path)
        .map_err(|e| anyhow::anyhow!("bind {}: {e}", updates_path.display()))?;
    updates.set_nonblocking(true)?;
    finish(&updates_path)?;
    let query_path = cfg.statd.query_socket.clone();
    prepare_path(&query_path)?;
    let queries = std::os::unix::net::UnixListener::bind(&query_path)
        .map_err(|e| anyhow::anyhow!("bind {}: {e}", query_path.display()))?;
    queries.set_nonblocking(true)?;
    finish(&query_path)?;
    let prometheus = match cfg.statd.prometheus {
        Some(a) => Some(common::net::listener::bind(a, None)?),
        None => None,
    };
    let dir = &cfg.statd.dir;
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
        if let Some((u, g)) = owner {
            nix::unistd::chown(dir, Some(u), Some(g))?;
        }
    }
    Ok(Sockets { updates, queries, prometheus, paths: vec![updates_path, query_path] })
}

/// Loads the state of `dir`, reports any damage, and consolidates it into a fresh
/// snapshot and journal.
///
/// # Errors
/// The directory or the new journal cannot be used.
pub fn recover(cfg: &StatdConfig) -> anyhow::Result<State> {
    let dir = &cfg.dir;
    let r = persist::recover(dir, cfg.max_keys).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    for p in &r.problems {
        tracing::error!("{p}");
    }
    tracing::info!(keys = r.table.len(), replayed = r.replayed, dir = %dir.display(), "state loaded");
    let generation = r.next_generation;
    persist::write_snapshot(dir, &persist::serialize(&r.table, generation), generation)
        .map_err(|e| anyhow::anyhow!("{}: writing the snapshot: {e}", dir.display()))?;
    let journal = Journal::open(dir, generation).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let mut state = State::new(r.table, journal);
    if !r.problems.is_empty() {
        state.count_failure("damaged-state", now());
    }
    Ok(state)
}

/// Rate-limited warnings for refused datagrams.
struct Complaints {
    last: Option<Instant>,
}

impl Complaints {
    fn warn(&mut self, what: &str) {
        if self.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            self.last = Some(Instant::now());
            tracing::warn!(
                "datagram refused: {what} (counted in mmstatd|failed|*; further ones this minute not logged)"
            );
        }
    }
}

fn handle(state: &mut State, bytes: &[u8], now: i64, complaints: &mut Complaints) {
    match parse_datagram(bytes) {
        Ok(records) => match state.commit(&records, now, true) {
            Ok(_) => {}
            Err(e @ Refused::TooManyKeys(_)) => {
                state.count_failure("max-keys", now);
                complaints.warn(&e.to_string());
            }
        },
        Err(e) => {
            state.count_failure(if e == Malformed::TooBig { "oversize" } else { "malformed" }, now);
            complaints.warn(&e.to_string());
        }
    }
}

async fn receive(socket: UnixDatagram, shared: Arc<Mutex<State>>, max_journal: u64, snapshot: Arc<Notify>) {
    // One byte more than allowed, to see oversized datagrams (the kernel truncates).
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut complaints = Complaints { last: None };
    loop {
        let n = match socket.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(cause = %e, "receiving updates failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let now = now();
        let mut state = shared.lock().unwrap_or_else(|p| p.into_inner());
        handle(&mut state, &buf[..n], now, &mut complaints);
        for _ in 1..BURST {
            match socket.try_recv(&mut buf) {
                Ok(n) => handle(&mut state, &buf[..n], now, &mut complaints),
                Err(_) => break,
            }
        }
        state.flush();
        if state.journal.size() > max_journal {
            snapshot.notify_one();
        }
    }
}

async fn query_connection(stream: UnixStream, shared: Arc<Mutex<State>>) -> io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut line = Vec::new();
        let read = tokio::time::timeout(
            QUERY_TIMEOUT,
            (&mut r).take(query::MAX_REQUEST as u64 + 1).read_until(b'\n', &mut line),
        )
        .await;
        let Ok(Ok(n)) = read else { return Ok(()) };
        if n == 0 {
            return Ok(());
        }
        let answer = if !line.ends_with(b"\n") {
            // Read the rest of the line first (up to a limit), so that the client's
            // write is not cut off by our close (it would see EPIPE, not the answer).
            let rest = tokio::time::timeout(QUERY_TIMEOUT, discard_line(&mut r, MAX_DISCARD)).await;
            if !matches!(rest, Ok(Ok(true))) {
                return Ok(());
            }
            "-ERR request line too long\n.\n".to_owned()
        } else {
            match std::str::from_utf8(&line).map(|l| l.trim_end_matches(['\r', '\n'])) {
                Err(_) => "-ERR request is not UTF-8\n.\n".to_owned(),
                Ok(l) => match query::parse(l) {
                    Ok(req) => query::answer(req, &mut shared.lock().unwrap_or_else(|p| p.into_inner()), now()),
                    Err(e) => format!("-ERR {e}\n.\n"),
                },
            }
        };
        w.write_all(answer.as_bytes()).await?;
        if !line.ends_with(b"\n") {
            return Ok(());
        }
    }
}

/// Bytes of an overlong query line read and thrown away before the error answer.
const MAX_DISCARD: u64 = 64 * 1024;

/// Reads and drops input up to and including the next `\n`, at most `limit` bytes.
/// True when the line ended within the limit.
async fn discard_line<R: AsyncBufRead + Unpin>(r: &mut R, limit: u64) -> io::Result<bool> {
    let mut seen = 0u64;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(false);
        }
        let (used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        r.consume(used);
        seen += used as u64;
        if done {
            return Ok(true);
        }
        if seen >= limit {
            return Ok(false);
        }
    }
}

async fn queries(listener: UnixListener, shared: Arc<Mutex<State>>, token: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = token.cancelled() => return,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(cause = %e, "query accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        tokio::spawn(query_connection(stream, shared.clone()));
    }
}

async fn sync(shared: &Mutex<State>) {
    let file = {
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        s.flush();
        s.journal.sync_handle()
    };
    let r = match file {
        Ok(f) => tokio::task::spawn_blocking(move || f.sync_data()).await.unwrap_or_else(|e| Err(io::Error::other(e))),
        Err(e) => Err(e),
    };
    if let Err(e) = r {
        tracing::error!(cause = %e, "journal sync failed");
    }
}

/// Writes a snapshot of the current state and starts a new journal generation.
///
/// # Errors
/// Rotation or snapshot I/O; the journals stay, so nothing is lost.
pub async fn snapshot(shared: &Mutex<State>, dir: &Path) -> io::Result<()> {
    let (bytes, generation, old) = {
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        let old = s.journal.rotate()?;
        let generation = s.journal.generation();
        (persist::serialize(&s.table, generation), generation, old)
    };
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        old.sync_data()?;
        persist::write_snapshot(&dir, &bytes, generation)
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// Serves until `token` is cancelled, then writes a last snapshot (so a clean restart
/// keeps every count exactly).
pub async fn serve(cfg: StatdConfig, sockets: &Sockets, state: State, token: CancellationToken) -> anyhow::Result<()> {
    let shared = Arc::new(Mutex::new(state));
    let snapshot_now = Arc::new(Notify::new());
    let updates = UnixDatagram::from_std(sockets.updates.try_clone()?)?;
    let listener = UnixListener::from_std(sockets.queries.try_clone()?)?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(receive(updates, shared.clone(), cfg.max_journal_size, snapshot_now.clone()));
    tasks.spawn(queries(listener, shared.clone(), token.clone()));
    if let Some(l) = &sockets.prometheus {
        let l = tokio::net::TcpListener::from_std(l.try_clone()?)?;
        tasks.spawn(crate::prometheus::serve(l, shared.clone(), token.clone()));
    }
    tracing::info!("listening");
    let mut sync_tick = tokio::time::interval(Duration::from_secs(cfg.sync_interval));
    let mut snapshot_tick = tokio::time::interval(Duration::from_secs(cfg.snapshot_interval));
    snapshot_tick.tick().await;
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            _ = sync_tick.tick() => sync(&shared).await,
            _ = snapshot_tick.tick() => if let Err(e) = snapshot(&shared, &cfg.dir).await {
                tracing::error!(cause = %e, "snapshot failed; the journal keeps everything");
            },
            () = snapshot_now.notified() => if let Err(e) = snapshot(&shared, &cfg.dir).await {
                tracing::error!(cause = %e, "snapshot failed; the journal keeps everything");
            },
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    snapshot(&shared, &cfg.dir).await.map_err(|e| anyhow::anyhow!("final snapshot: {e}"))?;
    tracing::info!("state saved");
    Ok(())
}
