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
//! in a lull: once the WAL holds more than its limit ([`WAL_MOST`], less on a disk with
//! little free space), the checkpointer copies what is left while holding the writer
//! turn (the frames appended since its last copy, a fraction of what the automatic
//! checkpoint copied under it), so that the next writer starts the WAL over and the file
//! stays bounded (`journal_size_limit` cuts it back when it does).
//!
//! The limit depends on free space because a checkpoint must grow the database file by
//! up to the WAL's size before the WAL can start over. With a fixed 32 MiB limit, the
//! fault test's 24 MiB disk filled with a 17 MiB WAL and a 5 MiB database file; once the
//! disk had room again, the next checkpoint still needed more than there was, so the WAL
//! never started over and every write failed "disk full" for good (the first version of
//! this checkpointer, reverted for that). Durability does not depend on it: a
//! commit is on disk once its WAL frames are synced, and a checkpoint that fails (a full
//! disk) leaves them there, to be copied by the next one. Several daemons on one file
//! each run a checkpointer; SQLite lets one copy at a time and answers the others "busy"
//! (a row, not an error), which they take as done.
//!
//! [`Write`]: super::write::Write

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, SqlitePool};
use tokio::sync::Notify;

/// How long the checkpointer waits after a commit woke it, so that the commits of that
/// time are copied by one checkpoint (and the database file synced once for them).
const PAUSE: Duration = Duration::from_millis(50);

/// Bytes the WAL may hold before the checkpointer finishes a checkpoint under the
/// writer turn, so that the WAL starts over: 16 MiB, or a quarter of the disk's free
/// space if that is less (but at least [`WAL_LEAST`]). A checkpoint must grow the
/// database file by up to the WAL's size before the WAL can start over; a WAL that took
/// most of a small disk could never be copied back once that disk filled.
const WAL_MOST: u64 = 16 << 20;

/// The least [`WAL_MOST`] comes down to on a nearly full disk: 1 MiB.
const WAL_LEAST: u64 = 1 << 20;

/// Bytes the `-wal` file is cut back to when it starts over (`PRAGMA
/// journal_size_limit`, [`WAL_MOST`]): a WAL that a burst grew past it gives the disk
/// space back. SQLite keeps the file's size otherwise.
pub(crate) const WAL_KEEP: u64 = WAL_MOST;

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
/// `PASSIVE` checkpoint on a connection of its own (opened again after a failure), and
/// when the WAL holds more than its limit ([`wal_limit`]) a second one at once, under the
/// writer turn `turn`, which copies only what was committed during the first. A run of
/// failures is logged once, as a warning, and its end once.
async fn run(options: SqliteConnectOptions, wake: Arc<Notify>, turn: Arc<tokio::sync::Mutex<()>>) {
    let dir = match options.get_filename().parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut conn: Option<(SqliteConnection, u64)> = None;
    // A failure is logged when a run of them starts (on a full disk every commit's
    // wake-up fails again), and once when a checkpoint succeeds after it.
    let mut failing = false;
    loop {
        wake.notified().await;
        tokio::time::sleep(PAUSE).await;
        let done = async {
            let (c, frame) = match conn.as_mut() {
                Some((c, frame)) => (c, *frame),
                None => {
                    let (c, frame) = conn.insert(open(&options).await?);
                    (c, *frame)
                }
            };
            let frames = checkpoint(c).await?;
            if frames.saturating_mul(frame) > wal_limit(&dir) {
                let _turn = turn.lock().await;
                checkpoint(c).await?;
            }
            Ok::<(), sqlx::Error>(())
        }
        .await;
        match done {
            Err(e) => {
                if !failing {
                    tracing::warn!(cause = %e, "WAL checkpoint failed; its pages stay in the WAL for the next one");
                }
                failing = true;
                conn = None;
            }
            Ok(()) if failing => {
                tracing::info!("WAL checkpoint done again");
                failing = false;
            }
            Ok(()) => {}
        }
    }
}

/// The checkpointer's connection and the bytes of one WAL frame (a page and its 24-byte
/// header).
async fn open(options: &SqliteConnectOptions) -> Result<(SqliteConnection, u64), sqlx::Error> {
    let mut c = options.connect().await?;
    let (page,): (i64,) = sqlx::query_as("PRAGMA page_size").fetch_one(&mut c).await?;
    Ok((c, u64::try_from(page).unwrap_or(4096) + 24))
}

/// Bytes the WAL may hold in `dir` before the checkpointer takes the writer turn:
/// [`WAL_MOST`], or a quarter of the free space when that is less, never under
/// [`WAL_LEAST`].
fn wal_limit(dir: &std::path::Path) -> u64 {
    let free =
        nix::sys::statvfs::statvfs(dir).map_or(u64::MAX, |s| s.blocks_available().saturating_mul(s.fragment_size()));
    wal_limit_for(free)
}

/// [`wal_limit`] for `free` bytes of free space.
fn wal_limit_for(free: u64) -> u64 {
    (free / 4).clamp(WAL_LEAST, WAL_MOST)
}

/// One `PASSIVE` checkpoint on `c`: the frames the WAL held (what SQLite answers as
/// `log`).
async fn checkpoint(c: &mut SqliteConnection) -> Result<u64, sqlx::Error> {
    let (_busy, log, _copied): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut *c).await?;
    Ok(u64::try_from(log).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 16 MiB while the disk has room; a quarter of the free space on a filling disk;
    /// never under 1 MiB; a file system that cannot be asked counts as roomy.
    #[test]
    fn the_wal_limit_follows_free_space() {
        assert_eq!(wal_limit_for(u64::MAX), 16 << 20);
        assert_eq!(wal_limit_for(64 << 20), 16 << 20);
        assert_eq!(wal_limit_for(40 << 20), 10 << 20);
        assert_eq!(wal_limit_for(2 << 20), 1 << 20);
        assert_eq!(wal_limit_for(0), 1 << 20);
        assert_eq!(wal_limit(std::path::Path::new("/nonexistent/mmmail")), 16 << 20);
        let here = wal_limit(&std::env::temp_dir());
        assert!((1 << 20..=16 << 20).contains(&here), "{here}");
    }
}
