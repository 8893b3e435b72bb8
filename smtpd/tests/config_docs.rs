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

/// The range checks of issue 14's and issue 16's settings refuse the file at load.
#[test]
fn checks_and_spool_settings_out_of_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cert = common::testing::TestCert::generate(dir.path());
    let base = BASE
        .replace("cert = \"c\"", &format!("cert = \"{}\"", cert.cert.display()))
        .replace("key = \"k\"", &format!("key = \"{}\"", cert.key.display()));
    let check = |sections: &str| {
        let path = dir.path().join("mmsmtpd.toml");
        std::fs::write(&path, format!("{base}{sections}\n")).unwrap();
        match common::config::load::<Config>(&path) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    let fine = "[dns]\nservers = [\"192.0.2.53\", \"192.0.2.53:5353\", \"[2001:db8::53]:53\"]\ntimeout = 1\nattempts = 5\n\
                [[dnsbl]]\nzone = \"bl.example\"\n[greylist]\ndelay = 1\nexpire = 2\n[smtpd]\nspool_loads = 1\nspool_dir = \"/var/spool\"";
    assert_eq!(check(fine), "", "the smallest values are taken");
    assert!(check("[dns]\nservers = [\"ns.example\"]").contains("dns.servers[0]"));
    assert!(check("[dns]\ntimeout = 0").contains("dns.timeout"));
    assert!(check("[dns]\nattempts = 6").contains("dns.attempts"));
    assert!(check("[[dnsbl]]\nzone = \"not a zone\"").contains("dnsbl[0].zone"));
    assert!(check("[greylist]\ndelay = 300\nexpire = 300").contains("greylist.expire"));
    assert!(check("[greylist]\nipv4_prefix = 33").contains("greylist.ipv4_prefix"));
    assert!(check("[checks]\nspf = \"bounce\"").contains("spf"), "a policy is record, tempfail or reject");
    assert!(check("[smtpd]\nspool_loads = 0").contains("smtpd.spool_loads"));
    assert!(check("[smtpd]\nspool_dir = \"spool\"").contains("smtpd.spool_dir"));
}
