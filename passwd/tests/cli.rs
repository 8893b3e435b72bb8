//! mmpasswd as a black box (style.md P11 (e)).

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::process::{Command, Output};

use common::password::{Verified, verify};
use common::testing::{Backend, TestDb, run_with_stdin};

fn mmpasswd(args: &[&str], stdin: &str) -> Output {
    // A refused invocation may exit before reading its input.
    run_with_stdin(Command::new(env!("CARGO_BIN_EXE_mmpasswd")).args(args), stdin.as_bytes())
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn md5_matches_mmmail() {
    let o = mmpasswd(&["--md5", "--stdin"], "someuserpassword\n");
    assert!(o.status.success());
    assert_eq!(stdout(&o), "5ed6dfd210b419415eb054a9bee92e57\n");
    let crlf = mmpasswd(&["--md5"], "test\r\n");
    assert_eq!(stdout(&crlf), "098f6bcd4621d373cade4e832627b4f6\n");
}

#[test]
fn argument_form_works_but_warns() {
    let o = mmpasswd(&["--md5", "someuserpassword"], "");
    assert!(o.status.success());
    assert_eq!(stdout(&o), "5ed6dfd210b419415eb054a9bee92e57\n");
    assert!(String::from_utf8_lossy(&o.stderr).contains("visible to other users"));
}

#[test]
fn argon2id_by_default() {
    let o = mmpasswd(&["--stdin"], "correct horse\n");
    assert!(o.status.success());
    let h = stdout(&o);
    let h = h.trim_end();
    assert!(h.starts_with("$argon2id$v=19$m=65536,t=3,p=1$"), "{h}");
    assert_eq!(verify(b"correct horse", h), Verified::Yes);
    assert_eq!(verify(b"correct horse\n", h), Verified::No);
    assert!(o.stderr.is_empty(), "no warning without an argument password");
}

#[test]
fn empty_password_is_refused() {
    let o = mmpasswd(&["--stdin"], "\n");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("empty password"));
}

#[test]
fn user_needs_config() {
    let o = mmpasswd(&["--user", "x"], "pw\n");
    assert_eq!(o.status.code(), Some(2));
}

#[tokio::test]
async fn sets_a_users_password_in_the_database() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    db.add_user("some user", "5ed6dfd210b419415eb054a9bee92e57").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mmsmtpd.toml");
    std::fs::write(
        &cfg,
        format!("[server]\nname = \"mx.example.org\"\n[database]\nurl = \"{}\"\n[smtpd]\nmax_hops = 5\n", db.url),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let o = mmpasswd(&["-c", cfg, "--user", "some user", "--stdin"], "n3w secret\n");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty(), "the hash goes to the database, not the terminal");
    let stored = db.store.user_password("some user").await.unwrap().unwrap().passwd;
    assert_eq!(verify(b"n3w secret", &stored), Verified::Yes);
    let o = mmpasswd(&["-c", cfg, "--user", "nobody", "--stdin"], "x\n");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no user named \"nobody\""));
    let o = mmpasswd(&["-c", cfg, "--user", "some user", "--md5", "--stdin"], "x\n");
    assert_eq!(o.status.code(), Some(1));
}
