//! What the clients were told, and the check of it against what the database holds.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a client was told about one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A reply that promises the work is durable: SMTP `250` after DATA, POP3 `+OK` to
    /// QUIT, TMTP `ack` with a `msgid`.
    Acked,
    /// A definite refusal (`4xx`/`5xx`, `-ERR`, an ack with an error), or a POP3 session
    /// dropped on purpose before QUIT: the work must not have happened.
    Refused(String),
    /// No reply: the connection broke after the request was complete. Either outcome is
    /// allowed; these are counted, not failed.
    InDoubt(String),
}

/// One recorded attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// What was attempted: a message marker, or a POP3 UIDL.
    pub key: String,
    /// What the client was told.
    pub reply: Reply,
    /// When the reply (or its absence) was seen.
    pub at: Instant,
}

/// Every attempt of one kind of client, shared by its workers.
#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<Vec<Attempt>>>);

impl Ledger {
    /// Records an attempt.
    pub fn record(&self, key: impl Into<String>, reply: Reply) {
        let a = Attempt { key: key.into(), reply, at: Instant::now() };
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(a);
    }

    /// A copy of every attempt so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Attempts answered [`Reply::Acked`].
    pub fn acked(&self) -> usize {
        self.attempts().iter().filter(|a| a.reply == Reply::Acked).count()
    }

    /// Attempts answered with a refusal.
    pub fn refused(&self) -> usize {
        self.attempts().iter().filter(|a| matches!(a.reply, Reply::Refused(_))).count()
    }

    /// The first acknowledgement at or after `t`.
    pub fn first_ack_after(&self, t: Instant) -> Option<Instant> {
        self.attempts().iter().filter(|a| a.reply == Reply::Acked && a.at >= t).map(|a| a.at).min()
    }

    /// A few refusal texts, for messages.
    pub fn refusal_samples(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .attempts()
            .iter()
            .filter_map(|a| match &a.reply {
                Reply::Refused(t) | Reply::InDoubt(t) => Some(t.clone()),
                Reply::Acked => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v.truncate(8);
        v
    }
}

/// One line of the fault report: one fault, on one backend, seen by one daemon's clients.
#[derive(Clone, Debug, Default)]
pub struct Row {
    /// The fault (`kill -9`, `database restart`, `disk full`, …).
    pub fault: String,
    /// `sqlite`, `postgres` or `mysql`.
    pub backend: String,
    /// Whose clients: `mmsmtpd`, `mmpop3d` or `mmtmtpd`.
    pub daemon: String,
    /// Attempts acknowledged.
    pub acked: usize,
    /// Acknowledged attempts found done exactly once (stored, deleted or queued).
    pub done: usize,
    /// Acknowledged attempts not found done: lost.
    pub lost: usize,
    /// Attempts done more than once.
    pub duplicated: usize,
    /// Attempts refused.
    pub refused: usize,
    /// Refused attempts that were done all the same (or work nobody asked for).
    pub refused_but_done: usize,
    /// Attempts without a reply.
    pub in_doubt: usize,
    /// In-doubt attempts that turned out done.
    pub in_doubt_done: usize,
    /// From the end of the fault to the first acknowledgement after it.
    pub recovery: Option<Duration>,
    /// Commits that got no answer from the database and were resolved by asking it
    /// again once it was back (from the daemon's log).
    pub resolved: usize,
}

impl Row {
    /// Nothing lost, nothing doubled, nothing refused yet done.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.refused_but_done == 0
    }

    /// The Markdown table header matching [`Row`]'s `Display`.
    pub const HEADER: &'static str = "| fault | backend | daemon | acked | done once | lost | duplicated | refused | refused but done | in doubt (done) | commits resolved | seconds to recover |\n| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |";
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let recovery = self.recovery.map_or_else(|| "–".to_owned(), |d| format!("{:.1}", d.as_secs_f64()));
        write!(
            f,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} |",
            self.fault,
            self.backend,
            self.daemon,
            self.acked,
            self.done,
            self.lost,
            self.duplicated,
            self.refused,
            self.refused_but_done,
            self.in_doubt,
            self.in_doubt_done,
            self.resolved,
            recovery
        )
    }
}

/// Checks attempts that create something (an SMTP message, a TMTP post), each key tried
/// once, against `stored` (key → how many times the database holds it).
pub fn check_created(ledger: &Ledger, stored: &HashMap<String, usize>, row: &mut Row) {
    let attempts = ledger.attempts();
    let mut seen: HashMap<&str, ()> = HashMap::new();
    for a in &attempts {
        seen.insert(a.key.as_str(), ());
        let n = stored.get(&a.key).copied().unwrap_or(0);
        if n > 1 {
            row.duplicated += 1;
        }
        match &a.reply {
            Reply::Acked => {
                row.acked += 1;
                match n {
                    0 => row.lost += 1,
                    1 => row.done += 1,
                    _ => {}
                }
            }
            Reply::Refused(_) => {
                row.refused += 1;
                if n > 0 {
                    row.refused_but_done += 1;
                }
            }
            Reply::InDoubt(_) => {
                row.in_doubt += 1;
                if n > 0 {
                    row.in_doubt_done += 1;
                }
            }
        }
    }
    // Stored things no client attempted at all.
    row.refused_but_done += stored.keys().filter(|k| !seen.contains_key(k.as_str())).count();
}

/// Checks POP3 deletions, counted per UIDL: the ledger's attempts name UIDLs marked
/// for deletion in a session, with what QUIT answered; `initial` is every UIDL the boxes
/// held at the start, `remaining` what they hold at the end. A UIDL whose deletion was
/// acknowledged at least once must be gone; one only ever refused must still be there;
/// one in doubt may be either; one never touched must be there.
pub fn check_deleted(ledger: &Ledger, initial: &[String], remaining: &[String], row: &mut Row) {
    let left: std::collections::HashSet<&str> = remaining.iter().map(String::as_str).collect();
    let mut by_uid: HashMap<&str, Vec<&Reply>> = HashMap::new();
    let attempts = ledger.attempts();
    for a in &attempts {
        by_uid.entry(a.key.as_str()).or_default().push(&a.reply);
    }
    for uid in initial {
        let present = left.contains(uid.as_str());
        match by_uid.get(uid.as_str()) {
            None => {
                if !present {
                    row.refused_but_done += 1;
                }
            }
            Some(replies) if replies.iter().any(|r| **r == Reply::Acked) => {
                row.acked += 1;
                if present {
                    row.lost += 1;
                } else {
                    row.done += 1;
                }
            }
            Some(replies) if replies.iter().any(|r| matches!(r, Reply::InDoubt(_))) => {
                row.in_doubt += 1;
                if !present {
                    row.in_doubt_done += 1;
                }
            }
            Some(_) => {
                row.refused += 1;
                if !present {
                    row.refused_but_done += 1;
                }
            }
        }
    }
}

/// Writes `row` to standard error and appends it to the report file.
pub fn report(row: &Row) {
    eprintln!("{row}");
    let path = crate::report_path();
    let fresh = !path.exists();
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        use std::io::Write;
        if fresh {
            let _ = writeln!(f, "{}", Row::HEADER);
        }
        let _ = writeln!(f, "{row}");
    }
}
