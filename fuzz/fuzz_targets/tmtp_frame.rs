//! TMTP framing and header decoding (spec/tmtp.md §1.2, §2): any buffered bytes give
//! "need more", a header within the buffer, or a quit reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tmtpd::proto::frame::{Parsed, parse};

fuzz_target!(|buf: &[u8]| {
    match parse(buf) {
        Ok(Parsed::Need(n)) => assert!(n > buf.len()),
        Ok(Parsed::Header { len, .. }) => assert!(len <= buf.len()),
        Err(_) => {}
    }
    let _ = tmtpd::proto::header::decode(buf);
});
