//! Write transactions that cannot outlive a failure (issue 18, style.md P6): every write
//! path of the store (delivery, deletions, locks, TMTP, passwords) runs in a [`Write`].
//!
//! Why not sqlx's own `Transaction`: sqlx counts the transactions it opened per
//! connection, and when a `COMMIT` fails the count is not lowered. SQLite, on a full disk,
//! has already rolled the transaction back by then; sqlx still counts one, so the next
//! transaction on that pooled connection becomes a `SAVEPOINT` inside a transaction that
//! is never committed. Its `250`s and `+OK`s are lost at the next restart, and the
//! connection holds the write lock meanwhile (verified against sqlx-sqlite 0.9; see the
//! fault suite's disk-full test). So a [`Write`] issues `BEGIN`, `COMMIT` and `ROLLBACK`
//! itself on a connection it owns, and:
//!
//! - SQLite write transactions begin `IMMEDIATE`: a deferred transaction that reads
//!   before it writes cannot take the write lock once another connection committed (it
//!   fails with "database is locked" instead of waiting);
//! - a connection whose `BEGIN`, `COMMIT` or `ROLLBACK` failed, whose transaction hit a
//!   database error, or whose transaction was abandoned half-way (a cancelled future) is
//!   closed, never returned to the pool; closing it makes the server roll back whatever
//!   it still holds. The retry that follows ([`super::retrying`]) therefore starts a fresh
//!   transaction on another connection;
//! - a transaction that ends on a refusal (a full box, a lost lease) is rolled back and
//!   its connection kept, since its state is known.
//!
//! The one exception is an in-memory SQLite database (tests): it lives in its single
//! connection, so that connection is rolled back instead of closed.
//!
//! A `COMMIT` that got no answer (the connection broke: the server was killed, the
//! network cut) may or may not have committed. [`WriteError::Unknown`] says so, and the
//! store finds out from the database once it answers again (see `Store::deliver`),
//! rather than telling a client "not stored" about work that was stored.

use sqlx::pool::PoolConnection;
use sqlx::{Database, Executor, Pool};

/// Why a [`Write`] failed.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// Nothing was committed.
    Db(sqlx::Error),
    /// The `COMMIT` was sent and no answer came: it may have committed.
    Unknown(sqlx::Error),
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        WriteError::Db(e)
    }
}

/// For callers to whom an unknown outcome is a failure like any other.
impl From<WriteError> for sqlx::Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Db(e) | WriteError::Unknown(e) => e,
        }
    }
}

impl From<WriteError> for crate::error::StoreError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Db(e) => crate::error::StoreError::Db(e),
            WriteError::Unknown(e) => crate::error::StoreError::CommitUnknown(e),
        }
    }
}

/// Whether a failed `COMMIT` (error `e` on backend `DB`) certainly committed nothing.
/// On PostgreSQL and SQLite any error the server reports means a rollback. A Galera node
/// answers a `COMMIT` with an error when it leaves the primary component while the
/// write set is on its way (1047 "WSREP has not yet prepared node for application use",
/// or an error during commit). The other nodes may still apply that write set, and this
/// node applies it too once it rejoins. So on MySQL/MariaDB only a deadlock or lost
/// certification (SQLSTATE 40001, which is retried) is a sure refusal; any other error is
/// in doubt, and the caller looks for its work once the database answers again.
pub(crate) fn refused_for_sure<DB: Database>(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(_) if DB::NAME == "MySQL" => crate::error::retryable(e),
        sqlx::Error::Database(_) => true,
        _ => false,
    }
}

/// A write transaction on a connection of its own; see the module notes.
pub(crate) struct Write<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    conn: Option<PoolConnection<DB>>,
    /// The in-memory SQLite case: roll back, never close.
    keep: bool,
    /// SQLite: this process's turn to write, held until the transaction ends (dropped
    /// after the connection).
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// SQLite: the database file's WAL checkpointer, woken by a commit
    /// (`store::checkpoint`).
    committed: Option<std::sync::Arc<tokio::sync::Notify>>,
}

impl<DB> Write<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Takes a connection from `pool` and runs `begin` (`BEGIN`, or `BEGIN IMMEDIATE` on
    /// SQLite). `keep` marks the in-memory SQLite pool. `turn` (SQLite) is waited for
    /// first: the writers of one process take turns in memory instead of meeting at the
    /// database's write lock, where SQLite's busy handler would make each waiter sleep
    /// in steps of milliseconds. `committed` (SQLite) is notified when the transaction
    /// commits.
    ///
    /// # Errors
    /// The pool's or the database's error; a connection whose `BEGIN` failed is closed.
    pub(crate) async fn begin(
        pool: &Pool<DB>,
        begin: &'static str,
        keep: bool,
        turn: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
        committed: Option<std::sync::Arc<tokio::sync::Notify>>,
    ) -> Result<Self, sqlx::Error> {
        let turn = match turn {
            Some(t) => Some(t.lock_owned().await),
            None => None,
        };
        let conn = pool.acquire().await?;
        let mut w = Write { conn: Some(conn), keep, _turn: turn, committed };
        w.run(begin).await?;
        Ok(w)
    }

    async fn run(&mut self, sql: &'static str) -> Result<(), sqlx::Error> {
        let conn = self.conn.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        conn.execute(sqlx::raw_sql(sql)).await.map(drop)
    }

    /// Commits. The connection goes back to the pool.
    ///
    /// # Errors
    /// [`WriteError::Db`]: the database refused the `COMMIT`, nothing is committed;
    /// [`WriteError::Unknown`]: no answer came, or (MySQL/MariaDB) the server refused the
    /// `COMMIT` for another reason than a lost certification or deadlock. The
    /// connection is closed either way.
    pub(crate) async fn commit(mut self) -> Result<(), WriteError> {
        match self.run("COMMIT").await {
            Ok(()) => {
                self.conn.take();
                if let Some(c) = &self.committed {
                    c.notify_one();
                }
                Ok(())
            }
            Err(e) => {
                self.discard().await;
                Err(if refused_for_sure::<DB>(&e) { WriteError::Db(e) } else { WriteError::Unknown(e) })
            }
        }
    }

    /// Rolls back after a refusal. The connection goes back to the pool.
    ///
    /// # Errors
    /// The `ROLLBACK` failed: the connection is closed (which rolls back).
    pub(crate) async fn rollback(mut self) -> Result<(), sqlx::Error> {
        match self.run("ROLLBACK").await {
            Ok(()) => {
                self.conn.take();
                Ok(())
            }
            Err(e) => {
                self.discard().await;
                Err(e)
            }
        }
    }

    /// Ends the transaction as `r` says: commit on success; on a database error the
    /// connection is closed (the server rolls back), so that a retry uses another one.
    ///
    /// # Errors
    /// `r`'s error, or the failed `COMMIT`'s (see [`Write::commit`]).
    pub(crate) async fn finish<T>(mut self, r: Result<T, sqlx::Error>) -> Result<T, WriteError> {
        match r {
            Ok(v) => self.commit().await.map(|()| v),
            Err(e) => {
                self.discard().await;
                Err(WriteError::Db(e))
            }
        }
    }

    /// Ends a transaction whose work may be refused: commits `Ok(Ok(_))`, rolls back
    /// `Ok(Err(refusal))` keeping the connection, and on a database error closes it as
    /// [`Write::finish`] does.
    ///
    /// # Errors
    /// The database error, or the failed `COMMIT`'s (see [`Write::commit`]) or
    /// `ROLLBACK`'s.
    pub(crate) async fn settle<T, R>(
        mut self,
        r: Result<Result<T, R>, sqlx::Error>,
    ) -> Result<Result<T, R>, WriteError> {
        match r {
            Ok(Ok(v)) => self.commit().await.map(|()| Ok(v)),
            Ok(Err(refusal)) => Ok(self.rollback().await.map(|()| Err(refusal))?),
            Err(e) => {
                self.discard().await;
                Err(WriteError::Db(e))
            }
        }
    }

    /// Gives the connection up after a failure: closed and awaited (so that SQLite's
    /// write lock is free before a retry begins), or rolled back in the in-memory case.
    async fn discard(&mut self) {
        if self.keep {
            let _ = self.run("ROLLBACK").await;
            self.conn.take();
        } else if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }
}

/// The transaction's statements run on `&mut *write`.
impl<DB> std::ops::Deref for Write<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        // Present until commit, rollback or drop, which all consume the `Write`.
        self.conn.as_deref().expect("a Write holds its connection until it ends")
    }
}

impl<DB> std::ops::DerefMut for Write<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    fn deref_mut(&mut self) -> &mut DB::Connection {
        self.conn.as_deref_mut().expect("a Write holds its connection until it ends")
    }
}

impl<DB> Drop for Write<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        if !self.keep {
            // Abandoned half-way: its state is unknown.
            conn.close_on_drop();
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = (&mut *conn).execute(sqlx::raw_sql("ROLLBACK")).await;
            });
        }
    }
}
