//! Durability (spec/mail.md §5.2 "Persistence and recovery"): every applied transaction
//! is appended to a journal as `T <unix-time> <record-count>` and its records; the whole
//! table is written now and then as a snapshot (temp file, fsync, rename, fsync of the
//! directory). Startup loads the snapshot and replays the journal.
//!
//! Journals are numbered (`journal.<generation>`) and the snapshot names the first
//! generation it does not contain: a crash between writing a snapshot and removing the
//! journals it covers then cannot count anything twice, and a crash before the rename
//! leaves the old snapshot with every journal it needs. (The spec's single `journal` file
//! would double-count in that window.)
//!
//! Damage never stops mmstatd: unreadable snapshot lines are skipped and reported, a
//! damaged snapshot is kept aside as `snapshot.damaged-<time>`, and a journal is replayed
//! up to its first incomplete or malformed transaction (the torn end of a crash).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use common::stats::Flag;

use crate::record::{Record, parse_record, valid_key};
use crate::table::{Entry, Table};

const SNAPSHOT: &str = "snapshot";
const SNAPSHOT_TMP: &str = "snapshot.tmp";
const MAGIC: &str = "mmstatd-snapshot 1";

fn journal_name(generation: u64) -> String {
    format!("journal.{generation}")
}

/// The journal being written.
pub struct Journal {
    dir: PathBuf,
    generation: u64,
    out: BufWriter<File>,
    size: u64,
}

impl Journal {
    /// Opens (appending) `journal.<generation>` in `dir`.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(dir: &Path, generation: u64) -> io::Result<Journal> {
        let file = OpenOptions::new().create(true).append(true).open(dir.join(journal_name(generation)))?;
        let size = file.metadata()?.len();
        Ok(Journal { dir: dir.to_path_buf(), generation, out: BufWriter::with_capacity(64 * 1024, file), size })
    }

    /// Its generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one transaction (buffered; see [`Journal::flush`]).
    ///
    /// # Errors
    /// Writing failed (the buffer may hold part of it; mmstatd logs and goes on).
    pub fn append(&mut self, time: i64, records: &[Record]) -> io::Result<()> {
        let mut text = format!("T {time} {}\n", records.len());
        for r in records {
            text.push_str(&r.to_string());
            text.push('\n');
        }
        self.size += text.len() as u64;
        self.out.write_all(text.as_bytes())
    }

    /// Hands the buffered transactions to the kernel: from here on a `kill -9` of
    /// mmstatd cannot lose them (a power cut still can until [`Journal::sync_handle`]'s
    /// file is synced).
    ///
    /// # Errors
    /// Writing failed.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// A second handle on the file, to `fdatasync` it away from the lock.
    ///
    /// # Errors
    /// `dup` failed.
    pub fn sync_handle(&self) -> io::Result<File> {
        self.out.get_ref().try_clone()
    }

    /// Starts the next generation; returns the file of the one just finished (flushed,
    /// to be synced by the caller).
    ///
    /// # Errors
    /// The new file cannot be opened; this journal goes on.
    pub fn rotate(&mut self) -> io::Result<File> {
        self.flush()?;
        let next = Journal::open(&self.dir, self.generation + 1)?;
        let old = std::mem::replace(self, next);
        old.out.into_inner().map_err(|e| e.into_error())
    }
}

/// The snapshot of `table` that names `next_generation` as the first journal it lacks.
pub fn serialize(table: &Table, next_generation: u64) -> Vec<u8> {
    // Written straight into one buffer (no string per entry): this runs under the
    // state lock, so it is what a snapshot costs the receiver.
    let mut out = Vec::with_capacity(64 + table.len() * 64);
    let _ = writeln!(out, "{MAGIC} {next_generation}");
    for (k, e) in table.iter() {
        let _ = writeln!(out, "{} {} {} {} {k}", e.flag.letter(), e.created, e.modified, e.value);
    }
    let _ = writeln!(out, "end {}", table.len());
    out
}

/// Writes `bytes` as the snapshot (atomically and durably), then removes the journals
/// older than `next_generation`.
///
/// # Errors
/// Any I/O failure before the rename (the old snapshot and journals stay in force).
pub fn write_snapshot(dir: &Path, bytes: &[u8], next_generation: u64) -> io::Result<()> {
    let tmp = dir.join(SNAPSHOT_TMP);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(SNAPSHOT))?;
    File::open(dir)?.sync_all()?;
    for (generation, path) in journals(dir)? {
        if generation < next_generation {
            let _ = fs::remove_file(path);
        }
    }
    Ok(())
}

fn journals(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        if let Some(g) = e.file_name().to_str().and_then(|n| n.strip_prefix("journal.")).and_then(|g| g.parse().ok()) {
            found.push((g, e.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// What startup found on disk.
#[derive(Debug)]
pub struct Recovered {
    /// The counters.
    pub table: Table,
    /// The generation the next journal must have.
    pub next_generation: u64,
    /// Transactions replayed from journals.
    pub replayed: u64,
    /// Damage found (each a line for the log); empty when all was well.
    pub problems: Vec<String>,
}

fn parse_entry(line: &str) -> Option<(String, Entry)> {
    let mut p = line.splitn(5, ' ');
    let flag = Flag::from_letter(p.next()?)?;
    let created = p.next()?.parse().ok()?;
    let modified = p.next()?.parse().ok()?;
    let value = p.next()?.parse().ok()?;
    let key = p.next()?;
    valid_key(key).ok()?;
    Some((key.to_owned(), Entry { value, flag, created, modified }))
}

/// Loads the snapshot (if any) into `table`; returns the first journal generation it
/// lacks, or `None` when its header is unreadable.
fn load_snapshot(dir: &Path, table: &mut Table, problems: &mut Vec<String>) -> io::Result<Option<u64>> {
    let path = dir.join(SNAPSHOT);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(0)),
        Err(e) => return Err(e),
    };
    let mut damaged = Vec::new();
    let mut next = None;
    let mut ended = None;
    let mut loaded = 0u64;
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line?;
        let Ok(line) = std::str::from_utf8(&line) else {
            damaged.push(i + 1);
            continue;
        };
        if i == 0 {
            next = line.strip_prefix(MAGIC).and_then(|r| r.trim().parse().ok());
            if next.is_none() {
                damaged.push(1);
            }
        } else if let Some(n) = line.strip_prefix("end ") {
            ended = n.parse::<u64>().ok();
        } else if ended.is_some() {
            damaged.push(i + 1);
        } else if let Some((k, e)) = parse_entry(line) {
            table.restore(k, e);
            loaded += 1;
        } else {
            damaged.push(i + 1);
        }
    }
    if ended != Some(loaded) || !damaged.is_empty() {
        let aside = dir.join(format!("snapshot.damaged-{}", now()));
        problems.push(format!(
            "snapshot damaged ({} bad line(s){}{}); loaded {loaded} entries, kept the file as {}",
            damaged.len(),
            damaged.first().map(|l| format!(", first at line {l}")).unwrap_or_default(),
            if ended.is_none() { ", no end line" } else { "" },
            aside.display()
        ));
        let _ = fs::copy(&path, &aside);
    }
    Ok(next)
}

/// Replays one journal; returns transactions applied.
fn replay(path: &Path, table: &mut Table, problems: &mut Vec<String>) -> io::Result<u64> {
    let mut lines = BufReader::new(File::open(path)?).split(b'\n');
    let mut applied = 0u64;
    let mut line_no = 0usize;
    let trouble = 'read: loop {
        let Some(header) = lines.next() else { break None };
        line_no += 1;
        let header = header?;
        let parsed = std::str::from_utf8(&header).ok().and_then(|h| {
            let mut p = h.strip_prefix("T ")?.split(' ');
            let time: i64 = p.next()?.parse().ok()?;
            let count: usize = p.next()?.parse().ok()?;
            p.next().is_none().then_some((time, count))
        });
        let Some((time, count)) = parsed else { break Some(format!("bad transaction header at line {line_no}")) };
        let mut records = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let Some(line) = lines.next() else {
                break 'read Some(format!("incomplete last transaction at line {line_no} (torn write)"));
            };
            line_no += 1;
            let line = line?;
            match std::str::from_utf8(&line).ok().map(parse_record) {
                Some(Ok(r)) => records.push(r),
                _ => break 'read Some(format!("bad record at line {line_no}")),
            }
        }
        // Accepted once already: the key limit does not apply again.
        let _ = table.apply(&records, time, false);
        applied += 1;
    };
    if let Some(t) = trouble {
        problems.push(format!("{}: {t}; replayed {applied} transaction(s), ignored the rest", path.display()));
    }
    Ok(applied)
}

/// Current Unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Loads the snapshot and replays the journals of `dir` (created if missing).
///
/// # Errors
/// Only when the directory cannot be created or read; damage inside files is reported
/// in [`Recovered::problems`] instead.
pub fn recover(dir: &Path, max_keys: usize) -> io::Result<Recovered> {
    fs::create_dir_all(dir)?;
    let mut table = Table::new(max_keys);
    let mut problems = Vec::new();
    let from = load_snapshot(dir, &mut table, &mut problems)?;
    let mut next_generation = from.unwrap_or(0);
    let mut replayed = 0;
    for (generation, path) in journals(dir)? {
        next_generation = next_generation.max(generation + 1);
        if generation >= from.unwrap_or(0) {
            replayed += replay(&path, &mut table, &mut problems)?;
        }
    }
    Ok(Recovered { table, next_generation, replayed, problems })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::parse_datagram;

    fn records(d: &str) -> Vec<Record> {
        parse_datagram(d.as_bytes()).unwrap()
    }

    #[test]
    fn snapshot_plus_journal_is_exact_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Table::new(100);
        t.apply(&records("U P 5 a\nU V 2 b"), 10, true).unwrap();
        write_snapshot(dir.path(), &serialize(&t, 1), 1).unwrap();
        let mut j = Journal::open(dir.path(), 1).unwrap();
        j.append(20, &records("U P 1 a\nU P 1 c")).unwrap();
        j.flush().unwrap();
        // A torn write: the header promises two records, one arrived.
        drop(j);
        let mut f = OpenOptions::new().append(true).open(dir.path().join("journal.1")).unwrap();
        f.write_all(b"T 30 2\nU P 100 a\n").unwrap();
        let r = recover(dir.path(), 100).unwrap();
        assert_eq!(r.table.get("a").unwrap().value, 6);
        assert_eq!(r.table.get("b").unwrap(), &Entry { value: 2, flag: Flag::Volatile, created: 10, modified: 10 });
        assert_eq!(r.table.get("c").unwrap().created, 20);
        assert_eq!(r.replayed, 1);
        assert_eq!(r.next_generation, 2);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].contains("torn"), "{:?}", r.problems);
    }

    #[test]
    fn a_crash_between_snapshot_and_journal_removal_counts_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Table::new(100);
        let mut j = Journal::open(dir.path(), 0).unwrap();
        let tx = records("U P 1 a");
        for _ in 0..3 {
            t.apply(&tx, 1, true).unwrap();
            j.append(1, &tx).unwrap();
        }
        j.rotate().unwrap();
        // Snapshot renamed into place but journal.0 not removed yet (the crash).
        let bytes = serialize(&t, 1);
        fs::write(dir.path().join(SNAPSHOT), &bytes).unwrap();
        t.apply(&tx, 2, true).unwrap();
        j.append(2, &tx).unwrap();
        j.flush().unwrap();
        let r = recover(dir.path(), 100).unwrap();
        assert_eq!(r.table.get("a").unwrap().value, 4);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    #[test]
    fn garbage_files_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SNAPSHOT), b"mmstatd-snapshot 1 0\nP 1 1 7 good\nP x y z bad key\n\xff\xfe\n")
            .unwrap();
        fs::write(dir.path().join("journal.0"), b"T 5 1\nU P 1 good\nnonsense\nT 6 1\nU P 1 good\n").unwrap();
        fs::write(dir.path().join("journal.x"), b"ignored: not a generation").unwrap();
        let r = recover(dir.path(), 100).unwrap();
        assert_eq!(r.table.get("good").unwrap().value, 8);
        assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
        assert!(
            fs::read_dir(dir.path()).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("snapshot.damaged-"))
        );
        // Pure noise as a snapshot: no header, so every journal is replayed.
        fs::write(dir.path().join(SNAPSHOT), vec![0u8; 4096]).unwrap();
        let r = recover(dir.path(), 100).unwrap();
        assert_eq!(r.table.get("good").unwrap().value, 1);
    }
}
