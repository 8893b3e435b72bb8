//! What counting costs, in figures (not assertions): the daemons' side (one connection's
//! update batch sent to a live socket, and dropped when mmstatd is absent) and mmstatd's
//! side (parse, apply and journal one datagram).
//!
//! Run: `cargo bench -p statd --bench stats`

#![allow(clippy::unwrap_used)] // a benchmark fails by panicking

use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use common::stats::{Stats, StatsConfig};
use statd::persist::Journal;
use statd::record::parse_datagram;
use statd::table::Table;

fn per_op(label: &str, n: u64, f: impl FnMut(u64)) {
    let mut f = f;
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    let e = t.elapsed();
    println!("{label:58} {:8.0} ns/op  ({:.0} /s)", e.as_nanos() as f64 / n as f64, n as f64 / e.as_secs_f64());
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    let drained = std::thread::spawn(move || {
        let mut buf = [0u8; 9000];
        let mut n = 0u64;
        rx.set_read_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
        while rx.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    });
    let stats = Stats::open(&StatsConfig { socket: path.clone(), enabled: true }, "mmsmtpd");
    let n = 200_000;
    per_op("daemon: connection opened (3 records), mmstatd reading", n, |i| {
        stats.connection_opened(if i % 2 == 0 { "192.0.2.7" } else { "2001:db8::1" }, 1, 1);
    });
    let received = drained.join().unwrap();
    println!("    received {received} of {n} datagrams, dropped {} updates (full queue)", stats.dropped());

    let absent = Stats::open(&StatsConfig { socket: dir.path().join("absent.sock"), enabled: true }, "mmsmtpd");
    per_op("daemon: connection opened, mmstatd absent (dropped)", n, |_| absent.connection_opened("192.0.2.7", 1, 1));
    let off = Stats::disabled("mmsmtpd");
    per_op("daemon: connection opened, counting off", n, |_| off.connection_opened("192.0.2.7", 1, 1));

    let datagram = b"U P 1 mmsmtpd|total|connections\nU V 1 mmsmtpd|current|connections\nU V 1 mmsmtpd|who|192.0.2.7\n";
    let mut table = Table::new(1_000_000);
    let mut journal = Journal::open(dir.path(), 0).unwrap();
    let n = 1_000_000;
    per_op("mmstatd: parse + apply + journal one 3-record datagram", n, |i| {
        let records = parse_datagram(datagram).unwrap();
        table.apply(&records, i as i64, true).unwrap();
        journal.append(i as i64, &records).unwrap();
        if i % 256 == 0 {
            journal.flush().unwrap();
        }
    });
    journal.flush().unwrap();
    println!("    journal: {} bytes for {n} datagrams", journal.size());
    let mut wide = Table::new(2_000_000);
    per_op("mmstatd: apply to 1,000,000 distinct keys (table growth)", n, |i| {
        let records =
            parse_datagram(format!("U P 1 mmsmtpd|who|10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255).as_bytes())
                .unwrap();
        wide.apply(&records, 0, true).unwrap();
    });
    let t = Instant::now();
    let snap = statd::persist::serialize(&wide, 1);
    println!(
        "mmstatd: snapshot of {} keys: {} bytes in {:.0} ms",
        wide.len(),
        snap.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
}
