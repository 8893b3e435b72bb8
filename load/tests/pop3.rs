#![allow(clippy::unwrap_used)] // tests fail by panicking

//! mmpop3-load against an in-process mmpop3d: it empties every box it is given and
//! refuses to time boxes that do not hold what it was told to expect.

use std::process::Command;

use common::store::{Delivery, MailCopy};
use common::testing::{Backend, Served, TestDb, run_with_stdin};

const BOXES: [&str; 3] = ["a@example.org", "b@example.org", "c@example.org"];
const PER_BOX: usize = 30;

/// Runs mmpop3-load on `addr` for [`BOXES`], the password on standard input.
fn load(addr: std::net::SocketAddr, expect: usize) -> (bool, String) {
    let out = run_with_stdin(
        Command::new(env!("CARGO_BIN_EXE_mmpop3-load"))
            .args(["--addr", &addr.to_string(), "--expect", &expect.to_string()])
            .args(BOXES),
        b"load pass\n",
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_empties_every_box_and_checks_the_count_first() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    let user = db.add_user("load", &common::password::hash(b"load pass").unwrap()).await;
    for address in BOXES {
        db.add_box(address, user, 0, 0).await;
        for i in 0..PER_BOX {
            let body = format!("Subject: {i}\r\n\r\n.a dot to stuff\r\n{}\r\n", "x".repeat(i * 100)).into_bytes();
            let copy = MailCopy { box_address: address.into(), uid: common::random_hex(16), trace: Vec::new() };
            db.store.deliver(&Delivery { body: &body, copies: vec![copy] }).await.unwrap();
        }
    }
    let cfg = pop3d::config::Config::new(common::testing::shared("pop.example.org", &db.url));
    let served = Served::<pop3d::Server>::start(cfg).await;
    let addr = served.addr;

    // A box holding other than expected is refused before anything is deleted.
    let (ok, text) = tokio::task::spawn_blocking(move || load(addr, PER_BOX + 1)).await.unwrap();
    assert!(!ok, "{text}");
    assert!(text.contains("30 messages listed, 31 expected"), "{text}");
    assert_eq!(db.counters("a@example.org").await.messages, PER_BOX as i64);

    let (ok, text) = tokio::task::spawn_blocking(move || load(addr, PER_BOX)).await.unwrap();
    assert!(ok, "{text}");
    assert!(text.starts_with(&format!("{} messages in ", BOXES.len() * PER_BOX)), "{text}");
    for address in BOXES {
        assert_eq!(db.counters(address).await.messages, 0, "{address} emptied");
    }
}
