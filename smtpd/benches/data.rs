//! The DATA and BDAT receivers on a message as it arrives: 100 KiB of 72-octet lines,
//! one in 20 dot-stuffed, fed in the 64 KiB reads the connection makes during bulk data.
//! Medians of interleaved rounds, MiB of wire octets per second of one core.
//!
//! `cargo bench -p smtpd --bench data [-- ROUNDS]`

use std::time::Instant;

use smtpd::proto::data::{ChunkReceiver, DataLimits, DataReceiver};

const LIMITS: DataLimits = DataLimits { max_size: 64 << 20, max_lines: 1 << 24 };

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(25);
    let mut wire = Vec::new();
    for i in 0..1400 {
        if i % 20 == 0 {
            wire.extend_from_slice(b"..");
        }
        wire.extend_from_slice(&[b'x'; 70]);
        wire.extend_from_slice(b"\r\n");
    }
    let plain = wire.clone();
    wire.extend_from_slice(b".\r\n");
    let per_round = 200;
    let (mut data, mut bdat) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..per_round {
            let mut r = DataReceiver::new(LIMITS);
            let mut done = None;
            for chunk in wire.chunks(64 * 1024) {
                done = r.feed(chunk).1;
            }
            assert!(done.is_some_and(|d| !d.too_big && !d.bare_line_end));
        }
        data.push((wire.len() * per_round) as f64 / t.elapsed().as_secs_f64() / 1048576.0);
        let t = Instant::now();
        for _ in 0..per_round {
            let mut r = ChunkReceiver::new(LIMITS);
            for chunk in plain.chunks(64 * 1024) {
                r.feed(chunk);
            }
            assert!(!r.finish().bare_line_end);
        }
        bdat.push((plain.len() * per_round) as f64 / t.elapsed().as_secs_f64() / 1048576.0);
    }
    println!("a {} KiB message in 64 KiB reads, median of {rounds} interleaved rounds", wire.len() / 1024);
    println!("  DATA (end marker, dot-unstuffing, limits): {:8.0} MiB/s", median(data));
    println!("  BDAT (line ends, limits):                  {:8.0} MiB/s", median(bdat));
}
