//! The table and its journal together: every change goes through [`State::commit`], so
//! what is in memory is what the journal replays to.

use std::time::{Duration, Instant};

use common::stats::Flag;

use crate::persist::Journal;
use crate::record::{Op, Record};
use crate::table::{Refused, Table};

/// How often a failing journal may be logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The counters and the journal that makes them durable.
pub struct State {
    /// The counters.
    pub table: Table,
    /// The journal being written.
    pub journal: Journal,
    last_error_log: Option<Instant>,
}

impl State {
    /// Joins a recovered table with the journal to continue in.
    pub fn new(table: Table, journal: Journal) -> Self {
        Self { table, journal, last_error_log: None }
    }

    /// Applies a transaction and journals it (see [`Table::apply`]).
    ///
    /// # Errors
    /// [`Refused`]: nothing changed and nothing was journaled.
    pub fn commit(&mut self, records: &[Record], now: i64, limited: bool) -> Result<u64, Refused> {
        let n = self.table.apply(records, now, limited)?;
        if let Err(e) = self.journal.append(now, records) {
            self.journal_failed(&e);
        }
        Ok(n)
    }

    /// Counts one of mmstatd's own failures: `mmstatd|failed|<what>`.
    pub fn count_failure(&mut self, what: &str, now: i64) {
        let r = Record { op: Op::Update, flag: Flag::Persistent, value: 1, key: format!("mmstatd|failed|{what}") };
        let _ = self.commit(&[r], now, false);
    }

    /// Hands buffered journal writes to the kernel.
    pub fn flush(&mut self) {
        if let Err(e) = self.journal.flush() {
            self.journal_failed(&e);
        }
    }

    fn journal_failed(&mut self, e: &std::io::Error) {
        if self.last_error_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            self.last_error_log = Some(Instant::now());
            tracing::error!(cause = %e, generation = self.journal.generation(), "journal write failed; counters are not durable until it works again");
        }
    }
}
