//! Mail addresses and paths (RFC 5321 §4.1.2, RFC 6531): a parsed address prints in a
//! form that parses to the same address.
#![no_main]

use common::address::{Address, parse_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    for utf8 in [false, true] {
        if let Ok(a) = Address::parse(text, utf8) {
            let again = Address::parse(&a.to_string(), utf8).expect("a printed address parses");
            assert_eq!(again, a);
            // Lookup keys (case folding, IDNA) never fail and are stable.
            assert_eq!(again.keys(), a.keys());
        }
        let _ = parse_path(text, utf8);
    }
    let _ = common::address::is_domain(text);
    let _ = common::address::is_address_literal(text);
    let _ = common::address::a_label_domain(text);
});
