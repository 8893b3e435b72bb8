//! The DATA receiver (RFC 5321 §4.5.2, spec/mail.md §3.3) and the BDAT one (RFC 3030):
//! fed the same bytes in any split they give the same result, the DATA receiver never
//! consumes past the end marker, and both keep to their limits. The first two input
//! bytes choose the split points.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtpd::proto::data::{ChunkReceiver, DataLimits, DataReceiver};

const LIMITS: DataLimits = DataLimits { max_size: 4096, max_lines: 64 };

fn feed_all(chunks: &[&[u8]]) -> (usize, Option<smtpd::proto::data::Received>) {
    let mut r = DataReceiver::new(LIMITS);
    let mut used = 0;
    for c in chunks {
        let (n, done) = r.feed(c);
        assert!(n <= c.len());
        used += n;
        if done.is_some() {
            return (used, done);
        }
        assert_eq!(n, c.len(), "everything is consumed until the end marker");
    }
    (used, None)
}

fuzz_target!(|input: &[u8]| {
    let Some((&a, rest)) = input.split_first() else { return };
    let Some((&b, data)) = rest.split_first() else { return };
    let whole = feed_all(&[data]);
    let (i, j) = (usize::from(a).min(data.len()), usize::from(b).min(data.len()));
    let (i, j) = (i.min(j), i.max(j));
    let split = feed_all(&[&data[..i], &data[i..j], &data[j..]]);
    assert_eq!(whole, split);
    if let (_, Some(r)) = &whole {
        assert!(r.message.len() <= LIMITS.max_size);
        assert!(!r.too_big || r.message.is_empty());
    }
    let chunked = |parts: &[&[u8]]| {
        let mut c = ChunkReceiver::new(LIMITS);
        parts.iter().for_each(|p| c.feed(p));
        c.finish()
    };
    let once = chunked(&[data]);
    assert_eq!(once, chunked(&[&data[..i], &data[i..j], &data[j..]]));
    assert!(once.too_big || once.message == data, "BDAT keeps the octets as sent");
    assert!(once.message.len() <= LIMITS.max_size);
});
