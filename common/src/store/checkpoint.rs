//! SQLite's WAL checkpoints, off the writers' path (issue 16).
//!
//! In WAL mode a commit appends the changed pages to the `-wal` file; a checkpoint copies
//! them back into the database file so that the WAL can start over. SQLite's automatic
//! checkpoint (`wal_autocheckpoint`, every 1000 pages) runs inside the `COMMIT` that
//! crosses the threshold, on the committing connection, so in this process it ran under
//! the writer turn (`together::sqlite_turn`): every write waiting behind that commit
//! waited for about 1000 page reads and writes and a sync of the database file. During a
//! 100 KiB SMTP intake that was about a third of the time the turn was held.
//!
//! So the daemons' connections turn the automatic checkpoint off
//! (`PRAGMA wal_autocheckpoint = 0`, set in `Store::connect`) and one task per database
//! file does it instead on a connection of its own: woken by each commit ([`Write`]
//! notifies it), it waits [`PAUSE`] for more to come, then runs a `PASSIVE` checkpoint,
//! which never blocks a writer or a reader. Writers go on appending while it copies, so
//! under a steady load it never catches up with them, and the WAL would only start over
//! in a lull: once the WAL holds more than [`WAL_LIMIT`] frames, the checkpointer copies
//! what is left while holding the writer turn (the frames appended since its last copy,
//! a fraction of what the automatic checkpoint copied under it), so that the next writer
//! starts the WAL over and the file stays bounded. Durability does not depend on it: a commit is on disk once its WAL frames
//! are synced, and a checkpoint that fails (a full disk) leaves them there, to be copied
//! by the next one.
//!
//! [`Write`]: super::write::Write

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, SqlitePool};
use tokio::sync::Notify;

/// How long the checkpointer waits after a commit woke it, so that the commits of that
/// time are copied by one checkpoint (and the database file synced once for them).
pub(crate) const PAUSE: Duration = Duration::from_millis(50);

/// Frames (pages) the WAL may hold before the checkpointer finishes a checkpoint under
/// the writer turn: 8192, 32 MiB at SQLite's 4 KiB page.
pub(crate) const WAL_LIMIT: i64 = 8192;

/// A database file's checkpointer: what wakes it and its task.
struct Checkpointer {
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// What a commit on the SQLite database file behind `p` notifies, its checkpointer
/// started on first use (again if the runtime it ran on has ended); `None` for an
/// in-memory database, which has no WAL.
pub(crate) fn sqlite_checkpointer(p: &SqlitePool) -> Option<Arc<Notify>> {
    static CHECKPOINTERS: std::sync::LazyLock<Mutex<std::collections::HashMap<std::path::PathBuf, Checkpointer>>> =
        std::sync::LazyLock::new(Default::default);
    if super::sqlite_in_memory(p) {
        return None;
    }
    let file = p.connect_options().get_filename().to_path_buf();
    let mut all = CHECKPOINTERS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(c) = all.get(&file).filter(|c| !c.task.is_finished()) {
        return Some(c.wake.clone());
    }
    let wake = Arc::new(Notify::new());
    // Its own options: the file only. Not the pool's, which set `journal_mode`: that
    // pragma needs a lock the busy timeout does not wait for, and the file is in WAL
    // mode already.
    let options = SqliteConnectOptions::new().filename(&file).busy_timeout(Duration::from_secs(30));
    let task = tokio::spawn(run(options, wake.clone(), super::together::sqlite_turn(p)));
    all.insert(file, Checkpointer { wake: wake.clone(), task });
    Some(wake)
}

/// The checkpointer of one database file: after each wake-up and [`PAUSE`], one
/// `PASSIVE` checkpoint on a connection of its own (opened again after a failure), and a
/// second under the writer turn `turn` when the WAL has grown past [`WAL_LIMIT`].
async fn run(options: SqliteConnectOptions, wake: Arc<Notify>, turn: Arc<tokio::sync::Mutex<()>>) {
    let mut conn: Option<SqliteConnection> = None;
    loop {
        wake.notified().await;
        tokio::time::sleep(PAUSE).await;
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match options.connect().await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tracing::warn!(cause = %e, "WAL checkpoint: cannot open a connection; the WAL grows until one can");
                    continue;
                }
            },
        };
        let mut done = checkpoint(c).await;
        if matches!(done, Ok(frames) if frames > WAL_LIMIT) {
            let _turn = turn.lock().await;
            done = checkpoint(c).await;
        }
        if let Err(e) = done {
            tracing::warn!(cause = %e, "WAL checkpoint failed; its pages stay in the WAL for the next one");
            conn = None;
        }
    }
}

/// One `PASSIVE` checkpoint on `c`: the frames the WAL held (what SQLite answers as
/// `log`).
async fn checkpoint(c: &mut SqliteConnection) -> Result<i64, sqlx::Error> {
    let (_busy, log, _copied): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut *c).await?;
    Ok(log)
}
