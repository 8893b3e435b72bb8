//! Hostile input at scale: seeded pseudo-random lines and byte streams (deterministic,
//! so a failure reproduces) through the command parser, the DATA receiver and a whole
//! session against a real store. Nothing may panic, every reply must be a well-formed
//! RFC 5321 reply, and the session must still answer afterwards.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use std::net::IpAddr;
use std::sync::Arc;

use common::testing::{Backend, Rng, TestDb};
use smtpd::proto::command::parse;
use smtpd::proto::data::{DataLimits, DataReceiver};
use smtpd::session::{Outcome, Session, Settings};

const SEEDS: &[&str] = &[
    "HELO x",
    "EHLO [127.0.0.1]",
    "MAIL FROM:<a@b.org> SIZE=10",
    "MAIL FROM:<>",
    "RCPT TO:<mmondor@example.org>",
    "RCPT TO:<Postmaster>",
    "RCPT TO:<@a,@b:c@example.org>",
    "DATA",
    "BDAT 10",
    "BDAT 7 LAST",
    "RSET",
    "NOOP",
    "QUIT",
    "VRFY x",
    "STARTTLS",
    "MAIL FROM:<\"q u\"@b.org> SMTPUTF8 BODY=8BITMIME",
    "RCPT TO:<jö@example.org>",
];

/// A random line: a valid command mutated, or random bytes.
fn line(rng: &mut Rng) -> Vec<u8> {
    let mut l = if rng.below(3) == 0 {
        (0..rng.below(600)).map(|_| rng.next_u64() as u8).collect()
    } else {
        SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec()
    };
    for _ in 0..rng.below(6) {
        if l.is_empty() {
            break;
        }
        let at = rng.below(l.len());
        match rng.below(4) {
            0 => l[at] = rng.next_u64() as u8,
            1 => l.insert(at, rng.pick(b"<>@:\"\\ \0\xff.=,")),
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
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..200_000 {
        let _ = parse(&line(&mut rng));
    }
}

#[test]
fn data_receiver_survives_random_streams_split_anywhere() {
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..2_000 {
        let mut stream: Vec<u8> = (0..rng.below(4000)).map(|_| rng.pick(b".\r\nA\0\xff")).collect();
        stream.extend_from_slice(b"\r\n.\r\n");
        let mut rx = DataReceiver::new(DataLimits { max_size: 1 + rng.below(3000), max_lines: 1 + rng.below(200) });
        let mut offset = 0;
        let mut done = None;
        while offset < stream.len() && done.is_none() {
            let end = (offset + 1 + rng.below(64)).min(stream.len());
            let (used, d) = rx.feed(&stream[offset..end]);
            assert!(used <= end - offset);
            offset += used;
            done = d;
        }
        assert!(done.is_some(), "the final CRLF.CRLF always ends the data");
    }
}

fn well_formed(r: &smtpd::proto::reply::Reply) {
    assert!((200..600).contains(&r.code), "{r}");
    let bytes = r.to_bytes();
    assert!(bytes.ends_with(b"\r\n") && bytes.split(|&b| b == b'\n').all(|l| l.len() <= 512), "{r}");
}

#[tokio::test]
async fn session_survives_random_commands() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    support::seed(&db).await;
    let settings = Arc::new(Settings::from_config(&support::config(&db.url)).unwrap());
    let mut rng = Rng(0x5eed_0003);
    let mut sessions = 0;
    while sessions < 40 {
        let mut s = Session::new(settings.clone(), "192.0.2.1".parse::<IpAddr>().unwrap(), false);
        sessions += 1;
        for _ in 0..150 {
            match s.handle_line(&line(&mut rng), &db.store).await {
                Outcome::Reply(r) | Outcome::StartTls(r) => well_formed(&r),
                Outcome::Close(r) => {
                    well_formed(&r);
                    break;
                }
                Outcome::Data(r) => {
                    well_formed(&r);
                    let mut rx = DataReceiver::new(s.data_limits());
                    let body: Vec<u8> = (0..rng.below(300)).map(|_| rng.next_u64() as u8).collect();
                    rx.feed(&body);
                    let (_, done) = rx.feed(b"\r\n.\r\n");
                    match s.data_end(done.unwrap(), &db.store).await {
                        Outcome::Reply(r) | Outcome::Close(r) => well_formed(&r),
                        other => panic!("{other:?}"),
                    }
                }
                Outcome::Chunk(size) => {
                    let body: Vec<u8> = (0..size.min(300)).map(|_| rng.next_u64() as u8).collect();
                    s.chunk_data(&body);
                    match s.chunk_end(&db.store).await {
                        Outcome::Reply(r) | Outcome::Close(r) => well_formed(&r),
                        other => panic!("{other:?}"),
                    }
                }
            }
        }
    }
    // Whatever happened, the store is consistent.
    support::consistent(&db, "mmondor@example.org").await;
}
