//! Group commit: writes that arrive while others hold the database's turn wait in a list,
//! and whoever gets the turn next does everything waiting, up to a batch's bounds, in one
//! transaction with one sync. Each waiting write gets the answer it would have got alone,
//! only sooner. Used for SMTP deliveries (`Store::deliver`), for TMTP writes: posts,
//! uploads and recipients' acks (`Store::tmtp_store_messages`, `Store::tmtp_upload`,
//! `Store::tmtp_acks`), and on SQLite for POP3 QUITs' deletions
//! (`Store::commit_deletions`).
//!
//! The turn is SQLite's in-process writer turn ([`sqlite_turn`]), or on PostgreSQL one of
//! [`PG_BATCHES`] turns of batches running at once on one database.

use std::sync::{Arc, Mutex, PoisonError};

use sqlx::{PgPool, SqlitePool};

use crate::error::StoreError;

/// A write waiting to be done together with others: what to do (`work`), its size in
/// bytes for a batch's bound, and where its answer goes.
pub(crate) struct Job<W, R> {
    /// Which job (unique in this process).
    id: u64,
    bytes: usize,
    /// What to write.
    pub(crate) work: W,
    /// Where the answer goes.
    pub(crate) answer: tokio::sync::oneshot::Sender<R>,
}

/// Jobs waiting for a turn, shared by those that wait.
pub(crate) type Waiting<W, R> = Arc<Mutex<Vec<Job<W, R>>>>;

/// How large a batch may grow: at most `jobs` jobs and `bytes` bytes of them (the first
/// job of a batch always goes, whatever its size).
#[derive(Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) jobs: usize,
    pub(crate) bytes: usize,
}

/// What a batch holds while it runs: SQLite's writer turn ([`sqlite_turn`]) or one of
/// PostgreSQL's [`PG_BATCHES`] turns.
pub(crate) enum Turn {
    Writer(Arc<tokio::sync::Mutex<()>>),
    Batches(Arc<tokio::sync::Semaphore>),
}

/// A [`Turn`] taken; given back when dropped.
pub(crate) enum Held {
    Writer(#[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>),
    Batch(#[allow(dead_code)] Option<tokio::sync::OwnedSemaphorePermit>),
}

impl Turn {
    /// Waits for the turn.
    async fn take(&self) -> Held {
        match self {
            Turn::Writer(m) => Held::Writer(m.clone().lock_owned().await),
            // The semaphore is never closed; were it, the batch would run without one.
            Turn::Batches(s) => Held::Batch(s.clone().acquire_owned().await.ok()),
        }
    }
}

/// Puts `work` (`bytes` long) in `waiting`, then waits for `turn` until a batch took it,
/// or for its answer from another caller's batch, whichever comes first: each time the
/// turn comes, whatever waits then (up to `bounds`) becomes a batch, run by
/// `run` in a task of its own with the turn held, so that a caller that goes away cannot
/// cut it short and every job in it gets its answer. None when the batch ended without
/// answering (its task panicked). A job not yet taken into a batch when its caller goes
/// away is withdrawn, as a write alone would not have begun.
pub(crate) async fn together<W, R, F, Fut>(
    waiting: &Waiting<W, R>,
    turn: &Turn,
    bounds: Bounds,
    work: W,
    bytes: usize,
    run: F,
) -> Option<R>
where
    W: Send + 'static,
    R: Send + 'static,
    F: Fn(Held, Vec<Job<W, R>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    struct Withdraw<'a, W, R> {
        waiting: &'a Waiting<W, R>,
        id: u64,
    }
    impl<W, R> Drop for Withdraw<'_, W, R> {
        fn drop(&mut self) {
            self.waiting.lock().unwrap_or_else(PoisonError::into_inner).retain(|t| t.id != self.id);
        }
    }
    let (answer, mut answered) = tokio::sync::oneshot::channel();
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    waiting.lock().unwrap_or_else(PoisonError::into_inner).push(Job { id, bytes, work, answer });
    let withdraw = Withdraw { waiting, id };
    loop {
        // Once another's batch has answered this job, the turn is no longer wanted: a
        // caller that stayed in the turn's queue would, when its turn came, start a batch
        // of whatever arrived just then, and every job behind it would wait through one
        // small batch per such caller.
        let held = tokio::select! {
            biased;
            got = &mut answered => return got.ok(),
            held = turn.take() => held,
        };
        // Whoever had the turn before may have taken this job already; take what waits
        // now, up to a batch's bounds.
        let (batch, mine_left) = {
            let mut w = waiting.lock().unwrap_or_else(PoisonError::into_inner);
            let (mut n, mut size) = (0, 0);
            while n < w.len() && n < bounds.jobs && (n == 0 || size + w[n].bytes <= bounds.bytes) {
                size += w[n].bytes;
                n += 1;
            }
            let batch: Vec<Job<W, R>> = w.drain(..n).collect();
            (batch, w.iter().any(|t| t.id == id))
        };
        if batch.is_empty() {
            drop(held);
        } else {
            tokio::spawn(run(held, batch));
        }
        if !mine_left {
            break;
        }
    }
    // Taken into a batch by now, by this caller or another: nothing to withdraw.
    drop(withdraw);
    answered.await.ok()
}

/// Answers every job of a batch whose transaction failed with `e`: the first gets `e`
/// itself, the others a copy of its text and its kind (refused, or a commit in doubt
/// that each caller resolves itself).
pub(crate) fn answer_all_failed<T, E: From<StoreError>>(
    answers: impl IntoIterator<Item = tokio::sync::oneshot::Sender<Result<T, E>>>,
    e: StoreError,
) {
    let unknown = matches!(e, StoreError::CommitUnknown(_));
    let text = e.to_string();
    let mut first = Some(e);
    for answer in answers {
        let e = first.take().unwrap_or_else(|| {
            let copy = sqlx::Error::Protocol(text.clone());
            if unknown { StoreError::CommitUnknown(copy) } else { StoreError::Db(copy) }
        });
        let _ = answer.send(Err(e.into()));
    }
}

/// The in-process writer turn of the SQLite database behind `p`, one per file (shared by
/// every pool on it in this process), so that two pools on one file also take turns.
pub(crate) fn sqlite_turn(p: &SqlitePool) -> Arc<tokio::sync::Mutex<()>> {
    static TURNS: std::sync::LazyLock<
        Mutex<std::collections::HashMap<std::path::PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    > = std::sync::LazyLock::new(Default::default);
    let file = p.connect_options().get_filename().to_path_buf();
    let mut turns = TURNS.lock().unwrap_or_else(PoisonError::into_inner);
    turns.entry(file).or_default().clone()
}

/// The waiting lists of one database: SMTP deliveries, TMTP posts and acks, POP3
/// deletions.
#[derive(Clone, Default)]
pub(crate) struct Lists {
    /// SMTP deliveries (`Store::deliver`).
    pub(crate) deliveries: Waiting<super::Together, Result<(), super::DeliverError>>,
    /// TMTP posts, uploads and acks (`Store::tmtp_store_messages`, `Store::tmtp_upload`,
    /// `Store::tmtp_acks`).
    pub(crate) tmtp: Waiting<super::tmtp::TmtpWrite, super::tmtp::TmtpAnswer>,
    /// POP3 QUITs' deletions (`Store::commit_deletions`), on SQLite.
    pub(crate) deletions: Waiting<super::Quit, Result<super::Update, StoreError>>,
}

/// The writes waiting for the writer turn of the SQLite database behind `p`, one set of
/// lists per file, as [`sqlite_turn`].
pub(crate) fn sqlite_waiting(p: &SqlitePool) -> Lists {
    static WAITING: std::sync::LazyLock<Mutex<std::collections::HashMap<std::path::PathBuf, Lists>>> =
        std::sync::LazyLock::new(Default::default);
    let file = p.connect_options().get_filename().to_path_buf();
    let mut waiting = WAITING.lock().unwrap_or_else(PoisonError::into_inner);
    waiting.entry(file).or_default().clone()
}

/// Batches stored at once on one PostgreSQL database: while they run, the writes that
/// arrive wait and form the next. More than one, so that deliveries into different boxes
/// keep some of the parallelism they have alone.
pub(crate) const PG_BATCHES: usize = 4;

/// The writes waiting to be stored together on the PostgreSQL database of `p`, and its
/// [`PG_BATCHES`] turns: one pair per server and database in this process.
pub(crate) fn pg_together(p: &PgPool) -> (Lists, Arc<tokio::sync::Semaphore>) {
    type Pair = (Lists, Arc<tokio::sync::Semaphore>);
    static PAIRS: std::sync::LazyLock<Mutex<std::collections::HashMap<String, Pair>>> =
        std::sync::LazyLock::new(Default::default);
    let o = p.connect_options();
    let key = format!("{}:{}/{}", o.get_host(), o.get_port(), o.get_database().unwrap_or(""));
    PAIRS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key)
        .or_insert_with(|| (Default::default(), Arc::new(tokio::sync::Semaphore::new(PG_BATCHES))))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller whose job another caller's batch took and answered returns with its
    /// answer at once, even while that batch still holds the turn: it does not queue for
    /// a turn it no longer needs (where, given the turn, it would run a batch of
    /// whatever arrived just then, one small batch per such caller).
    #[tokio::test]
    async fn a_job_answered_by_anothers_batch_does_not_wait_for_the_turn() {
        let waiting: Waiting<u32, u32> = Waiting::default();
        let writer = Arc::new(tokio::sync::Mutex::new(()));
        let turn = Turn::Writer(writer.clone());
        let bounds = Bounds { jobs: 64, bytes: 1 << 20 };
        let release = Arc::new(tokio::sync::Notify::new());
        let batches = Arc::new(Mutex::new(Vec::new()));
        // A batch answers its jobs, then keeps the turn until released.
        let run = |held: Held, batch: Vec<Job<u32, u32>>| {
            let (release, batches) = (release.clone(), batches.clone());
            async move {
                batches.lock().unwrap_or_else(PoisonError::into_inner).push(batch.len());
                for j in batch {
                    let _ = j.answer.send(j.work * 10);
                }
                release.notified().await;
                drop(held);
            }
        };
        // Both callers queue while the turn is held; the first to get it takes both jobs.
        let first = writer.clone().lock_owned().await;
        let both = async {
            tokio::join!(
                together(&waiting, &turn, bounds, 1, 1, &run),
                together(&waiting, &turn, bounds, 2, 1, &run),
                async {
                    tokio::task::yield_now().await;
                    drop(first);
                }
            )
        };
        let got = tokio::time::timeout(std::time::Duration::from_secs(20), both).await;
        release.notify_one();
        let (a, b, ()) = got.expect("the second caller waited for the turn after its answer");
        assert_eq!((a, b), (Some(10), Some(20)));
        assert_eq!(*batches.lock().unwrap_or_else(PoisonError::into_inner), vec![2], "one batch took both");
    }
}
