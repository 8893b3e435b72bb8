//! Hostile input at scale for POP3: seeded pseudo-random lines through the parser and
//! whole sessions (logged in and not, in SASL continuation), against a real store.
//! Nothing may panic and every status line must be well-formed.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use std::net::IpAddr;
use std::sync::Arc;

use common::testing::{Backend, Rng, TestDb};
use pop3d::proto::command::parse;
use pop3d::session::{Outcome, Session, Settings};
use support::{PASSWORD, put, seed};

const SEEDS: &[&str] = &[
    "STAT",
    "LIST",
    "LIST 1",
    "RETR 1",
    "RETR 2",
    "DELE 1",
    "TOP 1 0",
    "TOP 2 5",
    "UIDL",
    "UIDL 1",
    "RSET",
    "NOOP",
    "CAPA",
    "AUTH",
    "AUTH PLAIN",
    "AUTH PLAIN AG1tb25kb3JAZXhhbXBsZS5vcmcAeA==",
    "USER mmondor@example.org",
    "PASS x",
    "APOP a b",
    "STLS",
];

fn line(rng: &mut Rng) -> Vec<u8> {
    let mut l = if rng.below(3) == 0 {
        (0..rng.below(300)).map(|_| rng.next_u64() as u8).collect()
    } else {
        SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec()
    };
    for _ in 0..rng.below(5) {
        if l.is_empty() {
            break;
        }
        let at = rng.below(l.len());
        match rng.below(4) {
            0 => l[at] = rng.next_u64() as u8,
            1 => l.insert(at, rng.pick(b" 0-9=\0\xff")),
            2 => {
                l.remove(at);
            }
            _ => l.truncate(at),
        }
    }
    l
}

#[test]
fn parser_survives_random_lines() {
    let mut rng = Rng(0x5eed_0101);
    for _ in 0..200_000 {
        let _ = parse(&line(&mut rng));
    }
}

fn well_formed(r: &pop3d::proto::reply::Reply) {
    let b = r.to_bytes();
    assert!((b.starts_with(b"+OK") || b.starts_with(b"-ERR")) && b.ends_with(b"\r\n") && b.len() <= 512, "{r}");
}

#[tokio::test]
async fn sessions_survive_random_commands() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    put(&db, &["mmondor@example.org"], b"Subject: a\r\n\r\n.x\r\n").await;
    put(&db, &["mmondor@example.org"], b"").await;
    let mut cfg = support::config(&db.url);
    cfg.limits.max_errors = 1000;
    let settings = Arc::new(Settings::from_config(&cfg));
    let mut rng = Rng(0x5eed_0102);
    for round in 0..20 {
        let mut s = Session::new(settings.clone(), "127.0.0.1".parse::<IpAddr>().unwrap(), false);
        if round % 2 == 0 {
            s.handle_line(b"USER mmondor@example.org", &db.store).await;
            s.handle_line(format!("PASS {PASSWORD}").as_bytes(), &db.store).await;
        }
        for _ in 0..120 {
            match s.handle_line(&line(&mut rng), &db.store).await {
                Outcome::Reply(r) | Outcome::StartTls(r) | Outcome::Lines(r, _) | Outcome::Message(r, _, _) => {
                    well_formed(&r)
                }
                Outcome::Continue => {}
                Outcome::Close(r) => {
                    well_formed(&r);
                    break;
                }
            }
        }
        drop(s);
        // Let the lease of a dropped session be released before the next login.
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    let counters = db.counters("mmondor@example.org").await;
    assert_eq!(counters, db.store.recount("mmondor@example.org").await.unwrap());
}
