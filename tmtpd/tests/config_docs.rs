#![allow(clippy::unwrap_used)] // tests fail by panicking

//! Every key mmtmtpd accepts is in its example config and in a man page (its own for
//! `[tmtpd]`, mmsmtpd.toml(5) for the shared sections), and the example checks out.

use common::testing::{TestCert, accepted_keys};
use tmtpd::config::Config;

const BASE: &str = "[server]\nname = \"t.example.org\"\n[database]\nurl = \"sqlite::memory:\"\n[listen]\ntls_addresses = [\"127.0.0.1:2443\"]\n[tls]\ncert = \"c\"\nkey = \"k\"\n";

fn root() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/..").to_owned()
}

#[test]
fn every_key_is_documented() {
    let example = std::fs::read_to_string(format!("{}/etc/mmtmtpd.toml", root())).unwrap();
    let own = std::fs::read_to_string(format!("{}/man/mmtmtpd.toml.5", root())).unwrap();
    let shared = std::fs::read_to_string(format!("{}/man/mmsmtpd.toml.5", root())).unwrap();
    let in_example = |key: &str| {
        example.lines().any(|l| {
            let l = l.trim_start_matches('#').trim_start();
            l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key}="))
        })
    };
    let mut checked = 0;
    for section in accepted_keys::<Config>(BASE, None) {
        assert!(example.contains(&format!("[{section}]")), "[{section}] missing from etc/mmtmtpd.toml");
        assert!(own.contains(&format!("[{section}]")), "[{section}] missing from mmtmtpd.toml(5)");
        for key in accepted_keys::<Config>(BASE, Some(&section)) {
            let array_of_tables = example.contains(&format!("[[{section}.{key}]]"));
            assert!(in_example(&key) || array_of_tables, "{section}.{key} missing from etc/mmtmtpd.toml");
            let man = if section == "tmtpd" { &own } else { &shared };
            assert!(man.contains(&key), "{section}.{key} missing from its man page");
            checked += 1;
        }
    }
    // [[tmtpd.authby]] entries (an array of tables, which the probe cannot reach).
    for key in ["label", "login", "token", "std", "keys", "iss", "aud"] {
        assert!(in_example(key), "tmtpd.authby.{key} missing from etc/mmtmtpd.toml");
        assert!(own.contains(&format!(".B {key}")), "tmtpd.authby.{key} missing from mmtmtpd.toml(5)");
    }
    assert!(checked >= 40, "only {checked} keys found");
}

#[test]
fn the_example_config_checks_out_with_real_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate(dir.path());
    let example = std::fs::read_to_string(format!("{}/etc/mmtmtpd.toml", root())).unwrap();
    let text = example
        .replace("/etc/mmmail/tls/cert.pem", &cert.cert.display().to_string())
        .replace("/etc/mmmail/tls/key.pem", &cert.key.display().to_string());
    let path = common::testing::example_here(&text, dir.path(), "mmtmtpd.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmtmtpd"))
        .arg("--check-config")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The sharing settings of several instances are checked at load: a lease too short to
/// be renewed in time, a poll of no or of minutes' delay, an instance name that does not
/// fit its column.
#[test]
fn sharing_settings_out_of_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate(dir.path());
    let base = BASE
        .replace("cert = \"c\"", &format!("cert = \"{}\"", cert.cert.display()))
        .replace("key = \"k\"", &format!("key = \"{}\"", cert.key.display()));
    let check = |tmtpd: &str| {
        let path = dir.path().join("mmtmtpd.toml");
        std::fs::write(&path, format!("{base}[tmtpd]\n{tmtpd}\n")).unwrap();
        match common::config::load::<Config>(&path) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    assert_eq!(check("link_lease = 3\nwake_poll = 10\ninstance = \"a\""), "", "the smallest values are taken");
    assert!(check("link_lease = 2").contains("tmtpd.link_lease"));
    assert!(check("wake_poll = 60001").contains("tmtpd.wake_poll"));
    assert!(check(&format!("instance = \"{}\"", "x".repeat(65))).contains("tmtpd.instance"));
}
