//! mmstatd's update datagrams (spec/mail.md §5.2): any bytes are refused whole or give
//! records that print back to the same records.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|datagram: &[u8]| {
    if let Ok(records) = statd::record::parse_datagram(datagram) {
        assert!(!records.is_empty());
        for r in records {
            assert_eq!(statd::record::parse_record(&r.to_string()), Ok(r));
        }
    }
});
