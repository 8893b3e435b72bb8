//! The SQL store shared by every daemon: a closed enum over three sqlx pools (style.md
//! P6), the schema of design.md, and the mail rules that need it (recipient resolution,
//! box limits, `nofrom`); the TMTP operations are in [`tmtp`].
//!
//! Layers: [`sql`] holds every statement, written once; [`ops`] every operation, written
//! once and expanded per backend in [`backends`]; [`write`] the transactions every write
//! runs in; this module the public API, which picks the backend ([`dispatch!`]), retries
//! deadlocks and resolves commits that got no answer.

mod admin;
mod backends;
mod checkpoint;
mod health;
pub mod migrate;
pub mod model;
pub mod nodelay;
mod ops;
mod session;
mod sql;
mod tmtp;
pub use tmtp::WakeListener;
mod together;
mod write;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Connection;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{MySqlPool, PgPool, SqlitePool};

pub use model::{
    AddAlias, AddNode, BoxEntry, BoxInfo, BoxOwner, DeliverError, Delivery, Findings, MailCopy, MailEntry, Member,
    MemberStatus, Node, OwnsBoxes, Queued, ReadyMessage, Repaired, Resolution, Retrieved, Run, TmtpMessage, Update,
    UploadPart, Usage, User, UserEntry, Wake, WholeMessage,
};

use backends::{mysql, postgres, sqlite};
use together::{Held, Job, Turn, Waiting, pg_together, sqlite_turn, sqlite_waiting};

use crate::address::Address;
use crate::config::DatabaseConfig;
use crate::error::StoreError;
use crate::pattern;

/// SQLite's page cache per pooled connection: 512 KiB (`PRAGMA cache_size`, negative
/// means KiB), not SQLite's 2000 KiB. Message bodies are read once and the operating
/// system caches the file anyway; the default made each pooled connection grow to 2 MB
/// of its own, up to 16 MB per daemon at `max_connections = 8`. mmtmtpd under the
/// 100-client TMTP load with 16 connections: peak RSS 81 -> 66 MiB, same throughput.
const SQLITE_CACHE: &str = "-512";

/// Pages a SQLite transaction may hold dirty in memory before it writes them to the WAL
/// ahead of its commit (`PRAGMA cache_spill`): 1500, about 6 MiB at SQLite's 4 KiB page,
/// so that a group commit of deliveries (at most 4 MiB of bodies, [`TOGETHER`]) is
/// written once, at its commit. With the spill at [`SQLITE_CACHE`]'s 512 KiB, the pages
/// that every delivery of a batch changes again (the tables' last leaves, the index
/// pages, the box row) were written to the WAL again after each spill. Larger
/// transactions (a QUIT deleting thousands of messages) still spill past it, so their
/// memory stays bounded. One writer holds such a transaction at a time. Not a multiple
/// of 256: SQLite reads the number's low byte as the on/off switch, and would turn
/// spilling off altogether. 400 × 100 KiB into one box from 20 sessions, nine
/// interleaved pairs of runs (the first six with spilling off altogether): median 1132
/// -> 1378 msg/s, mmsmtpd's CPU 850 -> 675 µs per message, its peak RSS 23-26 -> 26-27
/// MiB; at 4 KiB no change but 1-2 MiB of peak RSS.
const SQLITE_SPILL: &str = "1500";

/// Attempts of a transaction that hit a deadlock, a busy database or, on a Galera
/// cluster, a certification conflict with a transaction committed on another node (all
/// rolled back, so trying again is safe). With [`retry_pause`] the attempts spread over
/// about 3 seconds: long enough for a box that every node delivers into at once.
const TRANSACTION_ATTEMPTS: u32 = 10;

/// Attempts of a delivery: more than [`TRANSACTION_ATTEMPTS`], as a box that every node
/// of a Galera cluster delivers into at once (a newsletter, a catch-all alias) can make
/// one delivery lose several rounds in a row; spread over about 20 seconds, well inside
/// the 10 minutes an SMTP client waits for the reply to DATA (RFC 5321 §4.5.3.2.6).
const DELIVERY_ATTEMPTS: u32 = 30;

/// The pause before attempt `attempt + 1`: doubling from 20 ms up to 1 s, each a random
/// length between half and all of that, so that transactions that collided do not
/// collide again in step.
fn retry_pause(attempt: u32) -> Duration {
    let full = (10u64 << attempt.min(7)).min(1000);
    let half = full / 2;
    Duration::from_millis(half + getrandom::u64().unwrap_or(0) % (half + 1))
}

/// How long a write whose `COMMIT` got no answer waits for the database to answer again,
/// to find out whether it committed (SMTP clients wait 10 minutes for the reply to the
/// end of DATA, RFC 5321 §4.5.3.2.6).
const RESOLVE_FOR: Duration = Duration::from_secs(30);

/// After a `COMMIT` whose outcome is unknown: asks `committed` until the database
/// answers (at most [`RESOLVE_FOR`]). `None` if it never did.
async fn resolve<F, Fut>(what: &'static str, mut committed: F) -> Option<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, StoreError>>,
{
    let deadline = tokio::time::Instant::now() + RESOLVE_FOR;
    let mut pause = Duration::from_millis(100);
    loop {
        match committed().await {
            Ok(done) => {
                tracing::warn!(
                    committed = done,
                    "{what}: the commit got no answer; the database says it {}",
                    if done { "committed" } else { "did not commit" }
                );
                return Some(done);
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::error!(cause = %e, "{what}: the commit got no answer and the database did not come back to tell");
                return None;
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Errors that may mean "the same transaction can succeed if tried again".
trait Retryable: std::fmt::Display {
    fn retryable(&self) -> bool;
}

impl Retryable for StoreError {
    fn retryable(&self) -> bool {
        self.is_retryable()
    }
}

impl Retryable for DeliverError {
    fn retryable(&self) -> bool {
        matches!(self, DeliverError::Store(e) if e.is_retryable())
    }
}

/// Runs a transaction, trying again with a growing pause while it fails on a deadlock or
/// busy database, up to [`TRANSACTION_ATTEMPTS`] times. Each attempt is a fresh
/// [`write::Write`] (the failed one's connection was closed).
/// The greylisting rule (`[greylist]` of mmsmtpd.toml, issue 14), in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Greylisting {
    /// How long a new triplet is refused.
    pub delay: i64,
    /// How long a refused triplet waits for its retry before it counts as new again.
    pub expire: i64,
    /// How long a passed triplet stays passed after it was last seen.
    pub keep: i64,
}

/// One sighting at `now` of a triplet whose row is `row` (`first`, `last`, `passed`;
/// `None` when new): the row's new `(first, last, passed)` and the seconds to wait (0 =
/// passes).
pub(crate) fn greylist_step(row: Option<(i64, i64, i64)>, now: i64, rule: Greylisting) -> (i64, i64, i64, i64) {
    match row {
        Some((first, last, passed)) if passed > 0 && now.saturating_sub(last) <= rule.keep => (first, now, passed, 0),
        Some((first, _, 0)) if now.saturating_sub(first) <= rule.expire => {
            let waited = now.saturating_sub(first);
            if waited >= rule.delay { (first, now, now, 0) } else { (first, now, 0, rule.delay - waited) }
        }
        // New, or its retry came too late, or it passed long ago: it starts again.
        _ => (now, now, 0, rule.delay),
    }
}

async fn retrying<T, E, F, Fut>(what: &'static str, transaction: F) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    retrying_up_to(TRANSACTION_ATTEMPTS, what, transaction).await
}

/// [`retrying`] with `attempts` attempts.
async fn retrying_up_to<T, E, F, Fut>(attempts: u32, what: &'static str, mut transaction: F) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match transaction().await {
            Err(e) if e.retryable() && attempt < attempts => {
                tracing::debug!(attempt, cause = %e, "{what} transaction retried");
                tokio::time::sleep(retry_pause(attempt)).await;
            }
            other => return other,
        }
    }
}

/// Handle to the database; cheap to clone (the pools are reference-counted).
#[derive(Clone, Debug)]
pub enum Store {
    /// PostgreSQL.
    Postgres(PgPool),
    /// MySQL or MariaDB.
    MySql(MySqlPool),
    /// SQLite (WAL mode).
    Sqlite(SqlitePool),
}

/// Runs operation `$f` of [`ops`] on the backend of `$self` (a [`Store`]), failing at
/// once while its server is known to be down ([`Store::gate`], [`Store::observe`]).
macro_rules! dispatch {
    ($self:expr, $f:ident ( $($arg:expr),* )) => {{
        let store: &Store = $self;
        match store.gate().await {
            Err(e) => Err(e.into()),
            Ok(()) => {
                let result = match store {
                    Store::Postgres(p) => postgres::$f(p, $($arg),*).await,
                    Store::MySql(p) => mysql::$f(p, $($arg),*).await,
                    Store::Sqlite(p) => sqlite::$f(p, $($arg),*).await,
                };
                store.observe(&result);
                result
            }
        }
    }};
}
use dispatch;

/// The file of a SQLite database URL (`sqlite:///var/lib/mmmail/mmmail.db`); `None` for
/// other backends and in-memory databases.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("sqlite:") || url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    SqliteConnectOptions::from_str(url).ok().map(|o| o.get_filename().to_path_buf())
}

/// Whether the daemons connect to the database server at `host` without TLS first, and
/// with the TLS the URL asks for only when the server refuses that (libpq's
/// `sslmode=allow`): `host` is a loopback address (127.0.0.0/8, ::1) or `localhost`, and
/// `url` names no TLS mode (`sslmode` or `ssl-mode`). sqlx's default, like libpq's, is to
/// try TLS first whenever the server offers it (`prefer`), which proves nothing about the
/// server and, on loopback, hides the traffic from no one who could not read it anyway;
/// it cost a quarter of PostgreSQL's intake of 100 KiB messages (BENCHMARKS.md). A URL
/// that names a mode gets exactly that mode.
pub fn plain_first(host: &str, url: &str) -> bool {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let names_mode = query.split('&').any(|pair| {
        let key = pair.split('=').next().unwrap_or("");
        key.eq_ignore_ascii_case("sslmode") || key.eq_ignore_ascii_case("ssl-mode")
    });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback && !names_mode
}

/// A connection error in few words: the I/O error itself ("Connection refused (os error
/// 111)") or the database's message, without sqlx's wrapping.
fn connect_cause(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Tls(t) => format!("TLS: {t}"),
        other => other.to_string(),
    }
}

impl Store {
    /// Opens a pool for `cfg.url` (`postgres://`, `mysql://` or `mariadb://`, `sqlite:`),
    /// creating a missing SQLite file (not its directory). Does not migrate: see
    /// [`Store::prepare`]. One connection is made first, on its own, so that a refused
    /// connection is reported at once rather than after the pool's `acquire_timeout`.
    ///
    /// A PostgreSQL or MySQL/MariaDB server on a loopback address, with no TLS mode in the
    /// URL (nor `PGSSLMODE`), is first tried without TLS, and with the URL's default (TLS
    /// when the server offers it) only if it refuses that: libpq's `sslmode=allow`
    /// ([`plain_first`]).
    ///
    /// # Errors
    /// [`StoreError::UnsupportedUrl`] for another scheme; [`StoreError::Open`] naming the
    /// host or file and the cause when the database cannot be opened within
    /// `acquire_timeout` seconds.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self, StoreError> {
        let url = cfg.url.expose().as_str();
        let timeout = Duration::from_secs(cfg.acquire_timeout.max(1));
        // The first connection, alone and within the timeout: its error is the answer.
        // A conflict while the session is set up is asked again on the same connection
        // (see `session`); one that outlasts that, on a new connection until the timeout.
        // `setup` is the session setup the pool runs after connecting.
        // The error comes with whether the server answered and refused (a database
        // error), as opposed to not answering.
        async fn probe<C: Connection, F>(
            opts: &C::Options,
            place: &str,
            timeout: Duration,
            setup: impl Fn(C) -> F,
        ) -> Result<(), (StoreError, bool)>
        where
            F: std::future::Future<Output = (C, Result<(), sqlx::Error>)>,
        {
            let open = |cause: String| StoreError::Open { place: place.to_owned(), cause };
            let deadline = tokio::time::Instant::now() + timeout;
            let mut attempt = 0;
            loop {
                attempt += 1;
                let pause = retry_pause(attempt);
                let connected = async {
                    let (conn, set) = setup(C::connect_with(opts).await?).await;
                    let _ = conn.close().await;
                    set
                };
                match tokio::time::timeout_at(deadline, connected).await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(e)) if crate::error::retryable(&e) && tokio::time::Instant::now() + pause < deadline => {
                        tokio::time::sleep(pause).await;
                    }
                    Ok(Err(e)) => {
                        let refused = matches!(e, sqlx::Error::Database(_));
                        return Err((open(connect_cause(&e)), refused));
                    }
                    Err(_) => return Err((open(format!("no answer within {} s", timeout.as_secs())), false)),
                }
            }
        }
        // The first connection, without TLS first when `plain` is given (see
        // `plain_first`); the options that worked are the pool's.
        async fn first<C: Connection, F>(
            plain: Option<C::Options>,
            opts: C::Options,
            place: &str,
            timeout: Duration,
            setup: impl Fn(C) -> F,
        ) -> Result<C::Options, StoreError>
        where
            F: std::future::Future<Output = (C, Result<(), sqlx::Error>)>,
        {
            if let Some(plain) = plain {
                match probe::<C, _>(&plain, place, timeout, &setup).await {
                    Ok(()) => return Ok(plain),
                    Err((e, false)) => return Err(e),
                    Err((e, true)) => {
                        tracing::info!(database = place, cause = %e, "refused without TLS; connecting with TLS");
                    }
                }
            }
            probe::<C, _>(&opts, place, timeout, &setup).await.map_err(|(e, _)| e)?;
            Ok(opts)
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            let place = format!("{}:{}/{}", opts.get_host(), opts.get_port(), opts.get_database().unwrap_or(""));
            let plain = (plain_first(opts.get_host(), url) && std::env::var_os("PGSSLMODE").is_none())
                .then(|| opts.clone().ssl_mode(sqlx::postgres::PgSslMode::Disable));
            let opts = first::<sqlx::PgConnection, _>(plain, opts, &place, timeout, |c| async { (c, Ok(())) }).await?;
            // The probe was the first connection; the pool opens its own as needed.
            let server: std::sync::Arc<str> = health::server_key(opts.get_host(), opts.get_port()).into();
            let port = opts.get_port();
            let pool = PgPoolOptions::new()
                .max_connections(cfg.max_connections)
                .acquire_timeout(timeout)
                .test_before_acquire(false)
                .after_connect(move |_, _| {
                    Box::pin(async move {
                        nodelay::after_connect(port).await;
                        Ok(())
                    })
                })
                .before_acquire(move |conn: &mut sqlx::PgConnection, _| {
                    let server = server.clone();
                    Box::pin(async move { Ok(health::ping(conn, &server).await) })
                })
                .connect_lazy_with(opts);
            Ok(Self::Postgres(pool))
        } else if let Some(rest) = url.strip_prefix("mysql://").or_else(|| url.strip_prefix("mariadb://")) {
            let opts = session::without_sqlx_setup(
                MySqlConnectOptions::from_str(&format!("mysql://{rest}"))?.charset("utf8mb4"),
            );
            let place = format!("{}:{}/{}", opts.get_host(), opts.get_port(), opts.get_database().unwrap_or(""));
            let plain =
                plain_first(opts.get_host(), url).then(|| opts.clone().ssl_mode(sqlx::mysql::MySqlSslMode::Disabled));
            let opts = first::<sqlx::MySqlConnection, _>(plain, opts, &place, timeout, |mut c| async move {
                let set = session::setup(&mut c).await;
                (c, set)
            })
            .await?;
            // The probe was the first connection; the pool opens its own as needed.
            let server: std::sync::Arc<str> = health::server_key(opts.get_host(), opts.get_port()).into();
            let port = opts.get_port();
            let pool = MySqlPoolOptions::new()
                .max_connections(cfg.max_connections)
                .acquire_timeout(timeout)
                .test_before_acquire(false)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        nodelay::after_connect(port).await;
                        session::setup(conn).await
                    })
                })
                .before_acquire(move |conn: &mut sqlx::MySqlConnection, _| {
                    let server = server.clone();
                    Box::pin(async move { Ok(health::ping(conn, &server).await) })
                })
                .connect_lazy_with(opts);
            Ok(Self::MySql(pool))
        } else if url.starts_with("sqlite:") {
            let memory = url.contains(":memory:") || url.contains("mode=memory");
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(30))
                .pragma("cache_size", SQLITE_CACHE)
                .pragma("cache_spill", SQLITE_SPILL);
            let place = opts.get_filename().display().to_string();
            if !memory
                && let Some(dir) = opts.get_filename().parent().filter(|d| !d.as_os_str().is_empty())
                && !dir.is_dir()
            {
                return Err(StoreError::Open { place, cause: format!("directory {} does not exist", dir.display()) });
            }
            // WAL checkpoints are the checkpointer's (`checkpoint`), not the committing
            // connection's.
            let opts = if memory {
                opts
            } else {
                opts.journal_mode(SqliteJournalMode::Wal)
                    .pragma("wal_autocheckpoint", "0")
                    .pragma("journal_size_limit", checkpoint::WAL_KEEP.to_string())
            };
            // An in-memory database exists once per connection: keep exactly one, forever.
            // A connection to a file has no server that could go away: no ping before use.
            let mut pool = SqlitePoolOptions::new().acquire_timeout(timeout).test_before_acquire(false);
            pool = if memory {
                pool.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
            } else {
                pool.max_connections(cfg.max_connections)
            };
            let pool =
                pool.connect_with(opts).await.map_err(|e| StoreError::Open { place, cause: connect_cause(&e) })?;
            Ok(Self::Sqlite(pool))
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    /// [`Store::connect`], then migrate (`cfg.migrate`) or check that the schema is
    /// current: what every daemon does at start (design.md "Databases").
    ///
    /// # Errors
    /// As [`Store::connect`], [`migrate::migrate`] and [`migrate::check_current`].
    pub async fn prepare(cfg: &DatabaseConfig) -> Result<Self, StoreError> {
        let store = Self::connect(cfg).await?;
        if cfg.migrate {
            migrate::migrate(&store).await?;
        } else {
            migrate::check_current(&store).await?;
        }
        for b in store.mixed_case_boxes().await? {
            tracing::warn!(r#box = %b, "box address not in lowercase: it receives no mail and cannot log in; store it in lowercase");
        }
        Ok(store)
    }

    /// Up to 20 box addresses that are not in lowercase (design.md "Schema"). Migration
    /// 0004 refuses new ones; these were inserted before it. Mail is looked up by the
    /// lowercased address, so such a box receives nothing and cannot log in.
    ///
    /// # Errors
    /// A database failure.
    pub async fn mixed_case_boxes(&self) -> Result<Vec<String>, StoreError> {
        dispatch!(self, mixed_case_boxes())
    }

    /// The backend's name, for logs: `postgres`, `mysql` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::MySql(_) => "mysql",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// Closes every pooled connection.
    pub async fn close(&self) {
        match self {
            Self::Postgres(p) => p.close().await,
            Self::MySql(p) => p.close().await,
            Self::Sqlite(p) => p.close().await,
        }
    }

    /// The box with exactly this (lowercase) address.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn find_box(&self, address: &str) -> Result<Option<BoxInfo>, StoreError> {
        dispatch!(self, find_box(address))
    }

    /// Resolves a recipient (design.md "Mail rules") by its lookup forms
    /// ([`Address::keys`]: lowercase, the domain as U-labels and as A-labels): the address
    /// as a box; else the most specific matching alias pattern
    /// ([`pattern::specificity_order`]) and each of its `alias_box` values that is a box
    /// (aliases do not chain); else whether the domain is served here at all (some box at
    /// it, or some alias pattern whose domain part matches it).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn resolve(&self, address: &Address) -> Result<Resolution, StoreError> {
        let keys = address.keys();
        for key in &keys {
            if let Some(b) = self.find_box(key).await? {
                return Ok(Resolution::Boxes(vec![b]));
            }
        }
        let aliases: Vec<(String, String)> = dispatch!(self, aliases())?;
        let winner = aliases
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| keys.iter().any(|k| pattern::matches(p, k)))
            .min_by(|a, b| pattern::specificity_order(a, b));
        if let Some(winner) = winner {
            let mut boxes: Vec<BoxInfo> = Vec::new();
            for (_, target) in aliases.iter().filter(|(p, _)| p == winner) {
                if let Some(b) = self.find_box(&target.to_lowercase()).await?
                    && !boxes.iter().any(|x| x.address == b.address)
                {
                    boxes.push(b);
                }
            }
            if !boxes.is_empty() {
                return Ok(Resolution::Boxes(boxes));
            }
            return Ok(Resolution::UnknownUser);
        }
        let domains = address.key_domains();
        let served_by_alias = aliases.iter().any(|(p, _)| {
            let domain_part = p.rsplit_once('@').map_or(p.as_str(), |(_, d)| d);
            domains.iter().any(|d| pattern::matches(domain_part, d))
        });
        if served_by_alias {
            return Ok(Resolution::UnknownUser);
        }
        for d in &domains {
            if dispatch!(self, domain_has_box(&like_suffix(d)))? {
                return Ok(Resolution::UnknownUser);
            }
        }
        Ok(Resolution::NotLocal)
    }

    /// Whether a client known as any of `names` (its address, and its host name when
    /// resolved) may use the null reverse-path: some `nofrom_pattern` matches one of them.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn nofrom_allows(&self, names: &[&str]) -> Result<bool, StoreError> {
        let patterns: Vec<String> = dispatch!(self, nofrom())?;
        Ok(patterns.iter().any(|p| names.iter().any(|n| pattern::matches(p, n))))
    }

    /// Stores a message: the body once, a `mail` row per copy, and each box's `box_size`,
    /// `box_mails` and `box_in` updated, all in one transaction. Each box is re-checked
    /// atomically: it must still be under both limits (so concurrent deliveries overrun a
    /// limit by at most the message being committed). Deadlocks, busy errors and Galera
    /// certification conflicts are retried, up to [`DELIVERY_ATTEMPTS`] times.
    ///
    /// On a SQLite file and on PostgreSQL, deliveries of bodies up to 256 KiB that arrive
    /// while others are being stored (on SQLite: while another write holds the
    /// database) are stored together, up to 64 (and 4 MiB of bodies) in one transaction
    /// and one sync (group commit); the answer of each is what it would have been alone,
    /// only sooner. On PostgreSQL each of one copy is one `WITH` statement in that
    /// transaction; one that comes alone is that statement on its own (bodies up to 16
    /// KiB). On MySQL/MariaDB a delivery of one copy is one round trip (the procedure
    /// `mmmail_deliver_one`, migration 0009).
    ///
    /// A `COMMIT` that got no answer (the database died or the connection broke) is
    /// resolved by looking for the stored copy once the database answers again: found,
    /// the delivery succeeded.
    ///
    /// # Errors
    /// [`DeliverError::NoRoom`] if a box is full (nothing stored anywhere);
    /// [`DeliverError::Store`] on a database failure: nothing stored, except with
    /// [`StoreError::CommitUnknown`], when the database never answered again within 30 s
    /// (the message may be stored; the client's retry may make a second copy).
    pub async fn deliver(&self, delivery: &Delivery<'_>) -> Result<(), DeliverError> {
        let now = unix_now();
        let done =
            match self {
                Store::Sqlite(p) if !sqlite_in_memory(p) && delivery.body.len() <= TOGETHER_BODY_MAX => {
                    self.deliver_together(&sqlite_waiting(p).deliveries, &Turn::Writer(sqlite_turn(p)), delivery).await
                }
                Store::Postgres(p) if delivery.body.len() <= TOGETHER_BODY_MAX => {
                    let (waiting, turns) = pg_together(p);
                    self.deliver_together(&waiting.deliveries, &Turn::Batches(turns), delivery).await
                }
                _ => {
                    retrying_up_to(DELIVERY_ATTEMPTS, "delivery", move || async move {
                        dispatch!(self, deliver(delivery, now))
                    })
                    .await
                }
            };
        match done {
            Err(DeliverError::Store(StoreError::CommitUnknown(e))) => {
                let Some(first) = delivery.copies.first() else { return Err(StoreError::Db(e).into()) };
                match resolve("delivery", || async { dispatch!(self, mail_stored(&first.uid)) }).await {
                    Some(true) => Ok(()),
                    Some(false) => Err(StoreError::Db(e).into()),
                    None => Err(StoreError::CommitUnknown(e).into()),
                }
            }
            other => other,
        }
    }

    /// Deliveries that wait for `turn` (SQLite: the writer turn; PostgreSQL: one of
    /// [`together::PG_BATCHES`] turns of deliveries to that database) are stored together, in one
    /// transaction (group commit), by whichever of them gets a turn next; `waiting` is
    /// where they wait. Each is still refused alone when a box is full, and each gets
    /// the batch's error when the transaction fails. The batch runs in a task of its
    /// own, so that a client that goes away cannot cut it short, and every delivery in
    /// it gets its answer.
    async fn deliver_together(
        &self,
        waiting: &Waiting<Together, Result<(), DeliverError>>,
        turn: &Turn,
        d: &Delivery<'_>,
    ) -> Result<(), DeliverError> {
        self.gate().await?;
        let work = Together { body: d.body.to_vec(), copies: d.copies.clone() };
        let bytes = work.body.len();
        let run = |held, batch| {
            let store = self.clone();
            async move { store.store_together(held, batch).await }
        };
        let answer = together::together(waiting, turn, TOGETHER, work, bytes, run).await;
        answer.unwrap_or_else(|| Err(StoreError::CommitUnknown(sqlx::Error::WorkerCrashed).into()))
    }

    /// Runs a batch of [`Store::deliver_together`] under its turn `turn`, then answers
    /// each of them.
    async fn store_together(&self, turn: Held, batch: Vec<Job<Together, Result<(), DeliverError>>>) {
        let now = unix_now();
        let (mut deliveries, mut answers) = (Vec::with_capacity(batch.len()), Vec::with_capacity(batch.len()));
        let mut bodies = Vec::with_capacity(batch.len());
        for t in batch {
            bodies.push(t.work.body);
            deliveries.push(t.work.copies);
            answers.push(t.answer);
        }
        let ds: Vec<Delivery<'_>> =
            bodies.iter().zip(deliveries).map(|(body, copies)| Delivery { body, copies }).collect();
        let done = retrying_up_to(DELIVERY_ATTEMPTS, "delivery", || async {
            let r = match self {
                Store::Sqlite(p) => sqlite::deliver_together(p, &ds, now).await,
                Store::Postgres(p) => postgres::deliver_together(p, &ds, now).await,
                Store::MySql(p) => mysql::deliver_together(p, &ds, now).await,
            };
            self.observe(&r);
            r
        })
        .await;
        drop(turn);
        match done {
            Ok(each) => {
                for (answer, r) in answers.into_iter().zip(each) {
                    let _ = answer.send(r.map_err(DeliverError::NoRoom));
                }
            }
            Err(e) => together::answer_all_failed(answers, e),
        }
    }

    /// The messages of a box in delivery order.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn maildrop(&self, box_address: &str) -> Result<Vec<MailEntry>, StoreError> {
        dispatch!(self, maildrop(box_address))
    }

    /// One stored message of `box_address`: its trace fields and the body. `None` if no
    /// such `mail_id` in that box (never looked up by id alone).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn retrieve(&self, box_address: &str, mail_id: i64) -> Result<Option<Retrieved>, StoreError> {
        dispatch!(self, retrieve(box_address, mail_id))
    }

    /// The stored messages of `box_address` within `run`, each with its `mail_id`, in
    /// delivery order: one query for a run of messages a POP3 client is about to
    /// retrieve one by one. Ids that are not in the box are simply absent. The answer
    /// holds at most `run.messages` messages of at most `run.max_size` octets each.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn retrieve_run(&self, box_address: &str, run: &Run) -> Result<Vec<(i64, Retrieved)>, StoreError> {
        dispatch!(self, retrieve_run(box_address, run))
    }

    /// The bytes and messages of a box counted from its `mail` rows, to compare with the
    /// `box_size`/`box_mails` counters.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn recount(&self, box_address: &str) -> Result<Usage, StoreError> {
        dispatch!(self, recount(box_address))
    }

    /// The id and stored password value of the user called `name`.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn user_password(&self, name: &str) -> Result<Option<User>, StoreError> {
        dispatch!(self, user_password(name))
    }

    /// Replaces the `user_passwd` of the user called `name` by `hash`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if there is no such user; [`StoreError::Db`].
    pub async fn set_user_password(&self, name: &str, hash: &str) -> Result<(), StoreError> {
        let found = retrying("password", move || async move { dispatch!(self, set_user_password(name, hash)) }).await?;
        if found { Ok(()) } else { Err(StoreError::NotFound) }
    }

    /// The user owning `box_address`, with the stored password value.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn box_owner(&self, box_address: &str) -> Result<Option<BoxOwner>, StoreError> {
        dispatch!(self, box_owner(box_address))
    }

    /// Replaces user `user_id`'s password value `old` by `new` (a re-hash after a legacy
    /// login). Returns false, changing nothing, if the value is no longer `old`: an
    /// administrator's concurrent change wins.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn replace_password(&self, user_id: i64, old: &str, new: &str) -> Result<bool, StoreError> {
        retrying("re-hash", move || async move { dispatch!(self, replace_password(user_id, old, new)) }).await
    }

    /// Greylisting (issue 14): the triplet whose key is `key` (a hash of client network,
    /// reverse-path and forward-path; `net` is the network, kept for the administrator)
    /// is seen now. Returns 0 when it passes, else the seconds left before a retry will.
    /// Every mmsmtpd on the database shares the table; two instances seeing a new triplet
    /// at once both answer "wait" for it.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn greylist(&self, key: &str, net: &str, rule: Greylisting) -> Result<i64, StoreError> {
        let now = unix_now();
        let once = || async move { dispatch!(self, greylist(key, net, now, rule)) };
        match retrying("greylist", once).await {
            // Another instance inserted the same new triplet at the same moment.
            Err(e) if e.is_duplicate() => retrying("greylist", once).await,
            other => other,
        }
    }

    /// Deletes the greylisting triplets last seen more than `age` seconds ago; how many.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn greylist_purge(&self, age: i64) -> Result<u64, StoreError> {
        let before = unix_now().saturating_sub(age);
        retrying("greylist purge", move || async move { dispatch!(self, greylist_purge(before)) }).await
    }

    /// Bans client address `address` (an address key: IPv6 cut to its network) until
    /// `until` (epoch seconds) for `reason`; an existing ban is extended, never
    /// shortened. Every daemon on the database refuses it at connect (issue 13).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn ban(&self, address: &str, until: i64, reason: &str) -> Result<(), StoreError> {
        match retrying("ban", move || async move { dispatch!(self, ban(address, until, reason)) }).await {
            // Another daemon banned it at the same moment: it is banned.
            Err(e) if e.is_duplicate() => Ok(()),
            other => other,
        }
    }

    /// Lifts the ban of `address` (as stored: an address key); whether there was one.
    /// Daemons stop refusing it at their next reading of the table (within 5 s).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn delete_ban(&self, address: &str) -> Result<bool, StoreError> {
        retrying("ban del", move || async move { dispatch!(self, delete_ban(address)) }).await.map(|n| n > 0)
    }

    /// The bans in force now: address and until (epoch seconds). Bans that are over
    /// are deleted first.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn active_bans(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let now = unix_now();
        retrying("ban expiry", move || async move { dispatch!(self, expire_bans(now)) }).await?;
        dispatch!(self, active_bans(now))
    }

    /// Takes the maildrop lock of `box_address` for `owner` (a per-session random id) for
    /// `lease` seconds, taking over a lease that expired. Returns false if another live
    /// session holds it. Works across processes and hosts sharing the database.
    /// Conflicts (deadlock; on Galera, another node's session taking or releasing the
    /// same lock at the same moment) are retried; one that outlasts every retry means
    /// sessions are contending for this maildrop, and is answered false (in use).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn lock_box(&self, box_address: &str, owner: &str, lease: u64) -> Result<bool, StoreError> {
        let now = unix_now();
        let expires = now.saturating_add(i64::try_from(lease).unwrap_or(i64::MAX));
        match retrying("lock", move || async move { dispatch!(self, lock_box(box_address, owner, now, expires)) }).await
        {
            Err(e) if e.is_retryable() => {
                tracing::info!(cause = %e, "maildrop lock still contended after every retry: answered in use");
                Ok(false)
            }
            other => other,
        }
    }

    /// Extends `owner`'s lease of `box_address` to `lease` seconds from now. Returns false
    /// if the lease was lost (expired and taken over).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn refresh_lock(&self, box_address: &str, owner: &str, lease: u64) -> Result<bool, StoreError> {
        let expires = unix_now().saturating_add(i64::try_from(lease).unwrap_or(i64::MAX));
        retrying("lock renewal", move || async move { dispatch!(self, refresh_lock(box_address, owner, expires)) })
            .await
    }

    /// Releases `owner`'s lease of `box_address` (nothing if it holds none).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn unlock_box(&self, box_address: &str, owner: &str) -> Result<(), StoreError> {
        retrying("unlock", move || async move { dispatch!(self, unlock_box(box_address, owner)) }).await
    }

    /// The POP3 UPDATE state (RFC 1939 §6) in one transaction, only under `owner`'s
    /// lease: if the maildrop lock of `box_address` is still `owner`'s and unexpired, it
    /// is released, the `mail` rows `ids` of the box are deleted, their sizes and count
    /// subtracted from `box_size` and `box_mails` (never below 0), `box_out` set, and
    /// each message body no box refers to any more deleted. Ids already gone are
    /// skipped. Deadlocks are retried.
    ///
    /// On a SQLite file, QUITs that arrive while another write holds the database are
    /// committed together, up to 64 in one transaction and one sync (group commit): the
    /// pages they share (the tables' leaves hold the messages of many boxes side by side)
    /// are written once, not once per QUIT. Each keeps its own answer: a lost lease
    /// changes nothing for that QUIT and does not hold the others back.
    ///
    /// A `COMMIT` without an answer is resolved as in [`Store::deliver`]: committed if
    /// none of `ids` is left in the box.
    ///
    /// # Errors
    /// [`StoreError::Db`]; nothing is deleted and the lock is kept then.
    /// [`StoreError::CommitUnknown`] if the database did not answer again within 30 s.
    pub async fn commit_deletions(&self, box_address: &str, owner: &str, ids: &[i64]) -> Result<Update, StoreError> {
        let quit = Quit { address: box_address.to_owned(), owner: owner.to_owned(), ids: ids.to_vec() };
        let done = match self {
            Store::Sqlite(p) if !sqlite_in_memory(p) => {
                self.gate().await?;
                let bytes = std::mem::size_of_val(ids);
                let run = |held, batch| {
                    let store = self.clone();
                    async move { store.delete_together(held, batch).await }
                };
                let (waiting, turn) = (sqlite_waiting(p).deletions, Turn::Writer(sqlite_turn(p)));
                let answer = together::together(&waiting, &turn, QUITS, quit, bytes, run).await;
                answer.unwrap_or_else(|| Err(StoreError::CommitUnknown(sqlx::Error::WorkerCrashed)))
            }
            _ => {
                let quit = std::slice::from_ref(&quit);
                retrying("deletion", move || async move {
                    let now = unix_now();
                    dispatch!(self, commit_deletions(quit, now, false))
                })
                .await
                .map(|each| each.first().copied().unwrap_or(Update::LockLost))
            }
        };
        match done {
            Err(StoreError::CommitUnknown(e)) => {
                match resolve("deletion", || async { dispatch!(self, mail_present(box_address, ids)) }).await {
                    Some(false) => Ok(Update::Deleted(ids.len() as u64)),
                    Some(true) => Err(StoreError::Db(e)),
                    None => Err(StoreError::CommitUnknown(e)),
                }
            }
            other => other,
        }
    }

    /// Runs a batch of [`Store::commit_deletions`] (SQLite) under the writer turn
    /// `turn`, then answers each of them.
    async fn delete_together(&self, turn: Held, batch: Vec<Job<Quit, Result<Update, StoreError>>>) {
        let (quits, answers): (Vec<Quit>, Vec<_>) = batch.into_iter().map(|j| (j.work, j.answer)).unzip();
        let done = retrying("deletion", || async {
            let now = unix_now();
            let r = match self {
                Store::Sqlite(p) => sqlite::commit_deletions(p, &quits, now, true).await,
                Store::Postgres(p) => postgres::commit_deletions(p, &quits, now, true).await,
                Store::MySql(p) => mysql::commit_deletions(p, &quits, now, true).await,
            };
            self.observe(&r);
            r
        })
        .await;
        drop(turn);
        match done {
            Ok(each) => {
                for (answer, update) in answers.into_iter().zip(each) {
                    let _ = answer.send(Ok(update));
                }
            }
            Err(e) => together::answer_all_failed(answers, e),
        }
    }

    /// Runs SQL text with no parameters (several statements allowed on MySQL and
    /// SQLite). For tests and administrative scripts; never with client input.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn execute_admin_sql(&self, sql: &str) -> Result<(), StoreError> {
        use sqlx::{AssertSqlSafe, Executor};
        let sql = AssertSqlSafe(sql.to_owned());
        match self {
            Self::Postgres(p) => p.execute(sql).await.map(drop)?,
            Self::MySql(p) => p.execute(sql).await.map(drop)?,
            Self::Sqlite(p) => p.execute(sql).await.map(drop)?,
        }
        Ok(())
    }
}

/// Deliveries at most this large (octets) are stored together on SQLite and PostgreSQL (see
/// [`Store::deliver`]); larger ones alone, without a second copy of their body.
const TOGETHER_BODY_MAX: usize = 256 * 1024;
/// At most 64 deliveries (or TMTP posts) and 4 MiB of their bodies in one transaction
/// (a first one always goes).
const TOGETHER: together::Bounds = together::Bounds { jobs: 64, bytes: 4 << 20 };

/// POP3 QUITs whose deletions wait for SQLite's writer turn are committed together (see
/// [`Store::commit_deletions`]): at most 64 of them, and (past the first) 256 KiB of
/// message ids (32,768 messages), in one transaction.
const QUITS: together::Bounds = together::Bounds { jobs: 64, bytes: 256 << 10 };

/// The deletions of one POP3 QUIT (RFC 1939 §6): the copies `ids` of box `address`,
/// under the maildrop lease of `owner`.
pub(crate) struct Quit {
    pub(crate) address: String,
    pub(crate) owner: String,
    pub(crate) ids: Vec<i64>,
}

/// A delivery waiting to be stored together with others: its body and copies.
pub(crate) struct Together {
    body: Vec<u8>,
    copies: Vec<MailCopy>,
}

/// Whether `p` is the pool of an in-memory SQLite database: [`Store::connect`] gives only
/// those a minimum and a maximum of exactly one connection.
fn sqlite_in_memory(p: &SqlitePool) -> bool {
    let o = p.options();
    o.get_min_connections() == 1 && o.get_max_connections() == 1
}

/// `%@domain` as a LIKE pattern with `!` as the escape character.
fn like_suffix(domain: &str) -> String {
    let mut s = String::from("%@");
    for c in domain.chars() {
        if matches!(c, '!' | '%' | '_') {
            s.push('!');
        }
        s.push(c);
    }
    s
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_suffix_escapes_wildcards() {
        assert_eq!(super::like_suffix("ex_am%ple!.org"), "%@ex!_am!%ple!!.org");
    }

    /// Without TLS first only on loopback, and only when the URL names no TLS mode.
    #[test]
    fn plain_first_on_loopback_without_a_named_mode() {
        use super::plain_first;
        for host in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LocalHost"] {
            assert!(plain_first(host, &format!("postgres://u@{host}/db")), "{host}");
        }
        for host in ["db.example.org", "192.0.2.7", "::ffff:192.0.2.7", "10.0.0.1", "localhost.example.org"] {
            assert!(!plain_first(host, &format!("postgres://u@{host}/db")), "{host}");
        }
        assert!(plain_first("127.0.0.1", "postgres://u@127.0.0.1/db?application_name=x"));
        assert!(!plain_first("127.0.0.1", "postgres://u@127.0.0.1/db?sslmode=prefer"));
        assert!(!plain_first("127.0.0.1", "postgres://u@127.0.0.1/db?x=1&SSLMODE=require"));
        assert!(!plain_first("localhost", "mysql://u@localhost/db?ssl-mode=required"));
    }
}
