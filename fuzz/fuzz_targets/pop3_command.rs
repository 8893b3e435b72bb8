//! POP3 command lines (RFC 1939, RFC 2449, RFC 5034): any bytes parse to a command or a
//! syntax error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let _ = pop3d::proto::command::parse(line);
    if let Ok(s) = std::str::from_utf8(line) {
        let _ = pop3d::session::login_address(s, true);
    }
});
