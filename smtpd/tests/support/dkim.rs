//! DKIM keys and dkimpy signatures for the checks' tests and benchmark (issue 14).
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether python3 has dkimpy (and authres, for ARC); required under `CI=true`.
pub fn have_dkimpy() -> bool {
    let ok = Command::new("python3").args(["-c", "import dkim, authres"]).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(!common::testing::ci(), "dkimpy and authres (PyPI) are required under CI=true");
        eprintln!("note: dkimpy or authres not installed; skipping");
    }
    ok
}

/// A 2048-bit RSA key made by openssl in `dir`, and its DNS form (`p=`: base64 of the
/// public key's DER).
pub fn rsa_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("dkim.pem");
    let made = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success(), "openssl genpkey");
    let der = Command::new("openssl").args(["pkey", "-pubout", "-outform", "DER", "-in"]).arg(&key).output().unwrap();
    assert!(der.status.success(), "openssl pkey");
    (key, data_encoding::BASE64.encode(&der.stdout))
}

/// `message` signed by dkimpy (`tests/support/dkim_sign.py MODE`) with `key` as
/// `selector` of `domain`.
pub fn sign(mode: &str, key: &Path, selector: &str, domain: &str, message: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/dkim_sign.py");
    let mut child = Command::new("python3")
        .args([script, mode, key.to_str().unwrap(), selector, domain])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(message.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "dkim_sign.py {mode} failed");
    String::from_utf8(out.stdout).unwrap()
}
