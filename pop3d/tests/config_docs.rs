//! Every key mmpop3d accepts is in its example config and in a man page (its own, or
//! mmsmtpd.toml(5) for the sections they share): the key lists come from the config
//! types themselves (`common::testing::accepted_keys`).

#![allow(clippy::unwrap_used)] // tests fail by panicking

use common::testing::accepted_keys;
use pop3d::config::Config;

const BASE: &str = "[server]\nname = \"pop.example.org\"\n[database]\nurl = \"sqlite::memory:\"\n[listen]\naddresses = [\"127.0.0.1:2110\"]\n[tls]\ncert = \"c\"\nkey = \"k\"\n";

#[test]
fn every_key_is_documented() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let example = std::fs::read_to_string(format!("{root}/etc/mmpop3d.toml")).unwrap();
    let own = std::fs::read_to_string(format!("{root}/man/mmpop3d.toml.5")).unwrap();
    let shared = std::fs::read_to_string(format!("{root}/man/mmsmtpd.toml.5")).unwrap();
    let mut checked = 0;
    for section in accepted_keys::<Config>(BASE, None) {
        assert!(example.contains(&format!("[{section}]")), "[{section}] missing from etc/mmpop3d.toml");
        assert!(own.contains(&format!("[{section}]")), "[{section}] missing from mmpop3d.toml(5)");
        for key in accepted_keys::<Config>(BASE, Some(&section)) {
            let in_example = example.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key}="))
            });
            assert!(in_example, "{section}.{key} missing from etc/mmpop3d.toml");
            let man = if section == "pop3d" { &own } else { &shared };
            assert!(man.contains(&key), "{section}.{key} missing from its man page");
            checked += 1;
        }
    }
    assert!(checked > 35, "only {checked} keys found");
}
