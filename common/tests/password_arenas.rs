//! The Argon2 work areas (issue 16): a verification leaves its 64 MiB area for the next
//! one, and an area unused for `ARENA_IDLE` is given back. Its own test binary, so that
//! no other test's hashing keeps an area busy meanwhile.

use std::time::{Duration, Instant};

use common::password::{ARENA_IDLE, Verified, dummy_verify, hash, kept_arenas, verify};

#[test]
fn work_areas_are_kept_then_given_back() {
    let stored = hash(b"pw").unwrap();
    assert_eq!(kept_arenas(), 1, "the area of the hash is kept");
    assert_eq!(verify(b"pw", &stored), Verified::Yes);
    assert_eq!(kept_arenas(), 1, "the verification took the kept area and gave it back");
    // Two at once need two; both are kept.
    std::thread::scope(|s| {
        let a = s.spawn(|| verify(b"pw", &stored));
        let b = s.spawn(|| dummy_verify(b"pw"));
        assert_eq!(a.join().unwrap(), Verified::Yes);
        assert_eq!(b.join().unwrap(), Verified::No);
    });
    let kept = kept_arenas();
    assert!((1..=2).contains(&kept), "{kept} areas kept");
    // Given back once idle (within two idle periods of the reaper, with room for a
    // loaded machine).
    let start = Instant::now();
    while kept_arenas() > 0 {
        assert!(start.elapsed() < ARENA_IDLE * 6, "{} areas still kept after {:?}", kept_arenas(), start.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(start.elapsed() >= ARENA_IDLE - Duration::from_millis(500), "given back too early");
    // And a later call works as before.
    assert_eq!(verify(b"pw", &stored), Verified::Yes);
    assert_eq!(kept_arenas(), 1);
}
