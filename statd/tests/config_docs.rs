#![allow(clippy::unwrap_used)] // tests fail by panicking

//! Every key mmstatd accepts is in its example config and in its man page (or, for the
//! sections it shares, in mmsmtpd.toml(5)); the example passes --check-config.

use common::testing::accepted_keys;
use statd::config::Config;

#[test]
fn every_key_is_documented() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let example = std::fs::read_to_string(format!("{root}/etc/mmstatd.toml")).unwrap();
    let own = std::fs::read_to_string(format!("{root}/man/mmstatd.toml.5")).unwrap();
    let shared = std::fs::read_to_string(format!("{root}/man/mmsmtpd.toml.5")).unwrap();
    let mut checked = 0;
    for section in accepted_keys::<Config>("", None) {
        assert!(example.contains(&format!("[{section}]")), "[{section}] missing from etc/mmstatd.toml");
        assert!(own.contains(&format!("[{section}]")), "[{section}] missing from mmstatd.toml(5)");
        for key in accepted_keys::<Config>("", Some(&section)) {
            let in_example = example.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key}="))
            });
            assert!(in_example, "{section}.{key} missing from etc/mmstatd.toml");
            let man = if matches!(section.as_str(), "statd" | "stats") { &own } else { &shared };
            assert!(man.contains(&key), "{section}.{key} missing from its man page");
            checked += 1;
        }
    }
    assert!(checked > 15, "only {checked} keys found");
}

#[test]
fn the_example_config_checks_out() {
    let dir = tempfile::tempdir().unwrap();
    let example = common::testing::example_here(include_str!("../../etc/mmstatd.toml"), dir.path(), "example.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmstatd"))
        .args(["--check-config", "-c"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
