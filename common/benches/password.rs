//! One Argon2id verification at mmpasswd's parameters (m = 64 MiB, t = 3, p = 1), as a
//! login pays it: with a fresh 64 MiB work area each time (the library's own
//! `verify_password`, what mmmail did before issue 16) and with the kept work area
//! `common::password::verify` uses. Rounds interleaved; medians, milliseconds of wall
//! time per verification, and the page faults each cost the process (getrusage).
//!
//! `cargo bench -p common --bench password [-- ROUNDS]`

use std::time::Instant;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordVerifier};

fn minor_faults() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).map_or(0, |u| u.minor_page_faults())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(15);
    let stored = common::password::hash(b"correct horse battery staple").expect("hash");
    let parsed = PasswordHash::new(&stored).expect("parse");
    let (mut fresh, mut kept, mut fresh_faults, mut kept_faults) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let (t, f) = (Instant::now(), minor_faults());
        assert!(Argon2::default().verify_password(b"correct horse battery staple", &parsed).is_ok());
        fresh.push(t.elapsed().as_secs_f64() * 1e3);
        fresh_faults.push((minor_faults() - f) as f64);
        let (t, f) = (Instant::now(), minor_faults());
        assert!(common::password::verify(b"correct horse battery staple", &stored).ok());
        kept.push(t.elapsed().as_secs_f64() * 1e3);
        kept_faults.push((minor_faults() - f) as f64);
    }
    let (f, k) = (median(fresh), median(kept));
    println!("Argon2id m=65536 t=3 p=1, one verification, median of {rounds} interleaved rounds");
    println!("  fresh work area (before): {f:7.1} ms  {:6.0} page faults", median(fresh_faults));
    println!("  kept work area  (now):    {k:7.1} ms  {:6.0} page faults", median(kept_faults));
    println!("  now / before: {:.2}", k / f);
}
