//! Every key mmsmtpd accepts is in its example config and its man page: the key lists
//! come from the config types themselves (`common::testing::accepted_keys`).

#![allow(clippy::unwrap_used)] // tests fail by panicking

use common::testing::accepted_keys;
use smtpd::config::Config;

const BASE: &str = "[server]\nname = \"mx.example.org\"\n[database]\nurl = \"sqlite::memory:\"\n[listen]\naddresses = [\"127.0.0.1:2525\"]\n[tls]\ncert = \"c\"\nkey = \"k\"\n";

#[test]
fn every_key_is_documented() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let example = std::fs::read_to_string(format!("{root}/etc/mmsmtpd.toml")).unwrap();
    let man = std::fs::read_to_string(format!("{root}/man/mmsmtpd.toml.5")).unwrap();
    let sections = accepted_keys::<Config>(BASE, None);
    assert!(sections.len() >= 9, "{sections:?}");
    let mut checked = 0;
    for section in &sections {
        // An array of tables (`[[dnsbl]]`) is written with double brackets.
        let array = example.contains(&format!("[[{section}]]"));
        let section = &if array { format!("[{section}]") } else { section.clone() };
        assert!(example.contains(&format!("[{section}]")), "[{section}] missing from etc/mmsmtpd.toml");
        assert!(man.contains(&format!(".SS [{section}]")), "[{section}] missing from mmsmtpd.toml(5)");
        for key in accepted_keys::<Config>(BASE, Some(section)) {
            let in_example = example.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key}="))
            });
            assert!(in_example, "{section}.{key} missing from etc/mmsmtpd.toml");
            assert!(man.contains(&key), "{section}.{key} missing from mmsmtpd.toml(5)");
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} keys found");
}
