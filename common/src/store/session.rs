//! The session setup of a MySQL/MariaDB connection, run by us rather than by sqlx so that
//! a conflict during it is asked again on the same connection.
//!
//! sqlx ends its connect with one `SET` of `sql_mode`, `time_zone` and the character set
//! and drops the connection when that fails. MariaDB Galera 10.11 (seen on 10.11.19) can
//! answer that `SET` with 1213 "Deadlock found" on a session that conflicts with nothing:
//! a server thread taken from the thread cache keeps a conflict state from its previous
//! session for a statement or two (the class of MDEV-29293). The dropped connection puts
//! that thread back into the cache, the next connection gets it again, and a client that
//! connects, fails and connects again was refused for 30 s and more in our Galera tests.
//! On the same connection the state clears: after a `SELECT 1` the `SET` succeeds.

use std::future::Future;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};

/// The session every MySQL/MariaDB connection of the store gets: the statement sqlx
/// itself sends with its defaults and our character set, so nothing changes for the SQL
/// the store and its administrative scripts run: `||` concatenates as in standard
/// SQL, no silent engine substitution, timestamps in UTC, UTF-8 of four octets.
pub(crate) const SETUP: &str = "SET sql_mode=(SELECT CONCAT(@@sql_mode, ',PIPES_AS_CONCAT,NO_ENGINE_SUBSTITUTION')),\
                                time_zone='+00:00',NAMES utf8mb4";

/// What clears a stale conflict state on the server side before the setup is asked
/// again; its own error, if any, is ignored.
const CLEAR: &str = "SELECT 1";

/// Attempts of [`SETUP`] on one connection; the pauses between them
/// ([`super::retry_pause`]: doubling from 20 ms, up to 1 s) add up to 1–2.3 s.
const ATTEMPTS: u32 = 8;

/// `opts` without sqlx's own session setup (the `SET` it sends after the handshake),
/// since [`setup`] sends it. The character set of the handshake stays as `opts` says.
pub(crate) fn without_sqlx_setup(opts: MySqlConnectOptions) -> MySqlConnectOptions {
    opts.pipes_as_concat(false).no_engine_substitution(false).timezone(None).set_names(false)
}

/// One statement on a connection; the seam that lets the retry rule be tested without a
/// server.
pub(crate) trait Statements {
    /// Runs `sql`, discarding any rows.
    fn run(&mut self, sql: &'static str) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

impl Statements for MySqlConnection {
    async fn run(&mut self, sql: &'static str) -> Result<(), sqlx::Error> {
        sqlx::Executor::execute(self, sql).await.map(|_| ())
    }
}

/// Sends [`SETUP`] on a new connection. A conflict (1213, or any error
/// [`crate::error::retryable`] calls safe to repeat) is followed by [`CLEAR`] and the
/// setup again, up to [`ATTEMPTS`] times with growing pauses.
///
/// # Errors
/// The first error that is not a conflict, or the last conflict once the attempts are
/// spent: the pool then reports a connection that could not be made.
pub(crate) async fn setup<S: Statements>(conn: &mut S) -> Result<(), sqlx::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match conn.run(SETUP).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < ATTEMPTS && crate::error::retryable(&e) => {
                tokio::time::sleep(super::retry_pause(attempt)).await;
                let _ = conn.run(CLEAR).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    /// A database error with a SQLSTATE, as sqlx reports one.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            "test error"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    /// A connection whose first `fails` setups end in `code`; it records what it ran.
    struct Scripted {
        fails: usize,
        code: &'static str,
        ran: Vec<&'static str>,
    }

    impl Statements for Scripted {
        async fn run(&mut self, sql: &'static str) -> Result<(), sqlx::Error> {
            self.ran.push(sql);
            if sql == SETUP && self.fails > 0 {
                self.fails -= 1;
                return Err(sqlx::Error::Database(Box::new(Coded(self.code))));
            }
            Ok(())
        }
    }

    /// A session that answers its first two setups with a deadlock is cleared and set
    /// up on the third, on the same connection.
    #[tokio::test(start_paused = true)]
    async fn a_conflict_during_setup_is_cleared_and_asked_again() {
        let mut conn = Scripted { fails: 2, code: "40001", ran: Vec::new() };
        setup(&mut conn).await.expect("set up on the third attempt");
        assert_eq!(conn.ran, [SETUP, CLEAR, SETUP, CLEAR, SETUP]);
    }

    /// A conflict that outlasts every attempt is the connection's error.
    #[tokio::test(start_paused = true)]
    async fn a_lasting_conflict_is_reported() {
        let mut conn = Scripted { fails: usize::MAX, code: "40001", ran: Vec::new() };
        let e = setup(&mut conn).await.expect_err("never set up");
        assert!(crate::error::retryable(&e));
        assert_eq!(conn.ran.iter().filter(|s| **s == SETUP).count(), ATTEMPTS as usize);
    }

    /// Another error (here: access denied) is not asked again.
    #[tokio::test(start_paused = true)]
    async fn another_error_ends_the_setup_at_once() {
        let mut conn = Scripted { fails: 1, code: "42000", ran: Vec::new() };
        setup(&mut conn).await.expect_err("refused");
        assert_eq!(conn.ran, [SETUP]);
    }
}
