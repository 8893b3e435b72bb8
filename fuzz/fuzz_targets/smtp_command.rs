//! SMTP command lines (RFC 5321 §4.1): any bytes parse to a command or a syntax error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    if let Ok(smtpd::proto::command::Command::Mail { from: Some(a), .. }) = smtpd::proto::command::parse(line) {
        // A parsed reverse-path prints as an address that parses again.
        assert!(common::address::Address::parse(&a.to_string(), true).is_ok(), "{a}");
    }
});
