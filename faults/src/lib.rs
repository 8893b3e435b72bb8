//! The fault suite's harness (issue 18, "Nothing acknowledged is ever lost"): real
//! mmsmtpd, mmpop3d and mmtmtpd processes under load from clients that record every
//! reply, on SQLite, PostgreSQL and MariaDB; faults applied from outside (kill -9 of a
//! daemon, the database killed and restarted, the disk full); then every reply checked
//! against what the database holds.
//!
//! The promise checked (design.md "Databases"): what was answered `250` after DATA
//! (SMTP), `+OK` to QUIT (POP3 deletions) or `ack` with a `msgid` (TMTP) is stored,
//! deleted or queued exactly once; what was answered with an error is not, except where
//! the fault cut the connection between the commit and the reply (counted as "in doubt",
//! never as a failure); box counters equal a recount; no POP3 lock outlives its fault;
//! no daemon panicked.
//!
//! Private database servers run from their own data directory on their own port
//! ([`db::PrivatePostgres`], [`db::PrivateMariaDb`]); the shared services are never
//! stopped or filled. Disks are small tmpfs mounts ([`disk::Tmpfs`]), so the suite needs
//! root, as CI has; elsewhere the tests that need it say so and pass without running
//! (under `CI=true` they fail instead).

#![forbid(unsafe_code)]

pub mod clients;
pub mod db;
pub mod disk;
pub mod galera;
pub mod ledger;
pub mod scenario;

use std::path::PathBuf;

/// Whether this process runs as root (needed for tmpfs mounts and for running the
/// private PostgreSQL as its own user).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether the root-only fault tests can run here. Under `CI=true` they must.
///
/// # Panics
/// Under `CI=true` when not root.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(!ci(), "{test} needs root under CI=true");
    eprintln!("note: {test} needs root (tmpfs mounts, private database servers); skipped");
    false
}

/// `CI=true` (or `1`).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The path of workspace binary `name` of `package`, built if missing (the suite runs
/// from `cargo test --workspace`, which builds them all).
///
/// # Panics
/// If it cannot be found or built, or if it is older than its sources: a fault test
/// against a stale daemon would test old code (run `cargo build --workspace` first, or
/// the whole `cargo test --workspace`).
pub fn bin(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/faults-… → target/<profile>/
    let dir = exe.parent().and_then(|d| d.parent()).expect("target directory");
    let bin = common::testing::sibling_bin(&dir.join("faults"), name, package);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).expect("binary time");
    let newest =
        [root.join(package).join("src"), root.join("common").join("src")].iter().filter_map(|d| newest_file(d)).max();
    assert!(
        newest.is_none_or(|n| n <= built),
        "{} is older than its sources: run `cargo build --workspace` (or `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// The newest modification time of any file under `dir`.
fn newest_file(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let t = if e.file_type().is_ok_and(|t| t.is_dir()) {
            newest_file(&e.path())
        } else {
            e.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// Where the fault report rows go: `target/fault-report.md` (one row per fault,
/// backend and daemon; see [`ledger::Row`]).
pub fn report_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|d| d.parent())
        .and_then(|d| d.parent())
        .map_or_else(|| PathBuf::from("fault-report.md"), |t| t.join("fault-report.md"))
}
