//! SMTP intake with the checks of issue 14 on and off, against a DNS server on loopback
//! (`common::testdns`): `cargo bench -p smtpd --bench checks [-- CLIENTS MESSAGES ROUNDS]`.
//!
//! An in-process mmsmtpd on SQLite (release build) takes CLIENTS concurrent sessions of
//! MESSAGES messages each (default 8 × 100), every client behind a PROXY header naming an
//! address of its own in 192.0.2.0/24 with reverse DNS that confirms, its sender domain
//! publishing SPF and DMARC, its messages DKIM-signed by dkimpy when python3 has it.
//! Rounds alternate checks off and on; the medians and their ratio are printed. The
//! issue's target: with checks on, intake stays within 20 % of intake with them off.

#![allow(clippy::unwrap_used, missing_docs)] // a benchmark fails by panicking

use std::net::Ipv4Addr;
use std::time::Instant;

#[path = "../tests/support/dkim.rs"]
mod dkim;

use common::testdns::{Rec, TestDns};
use common::testing::{Backend, Client, Served, TestDb};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

type Server = Served<smtpd::Server>;

async fn reply(c: &mut Client<tokio::net::TcpStream>) -> u16 {
    loop {
        let mut line = String::new();
        c.io.read_line(&mut line).await.unwrap();
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.get(..3).and_then(|x| x.parse().ok()).unwrap_or(0);
        }
    }
}

async fn client(server: &Server, n: u8, messages: usize, body: &str) -> usize {
    let mut c = Client::connect(server.addr).await;
    c.io.get_mut().write_all(format!("PROXY TCP4 192.0.2.{n} 127.0.0.1 40000 25\r\n").as_bytes()).await.unwrap();
    assert_eq!(reply(&mut c).await, 220);
    c.send(b"EHLO mail.bench.test\r\n").await;
    assert_eq!(reply(&mut c).await, 250);
    let mut stored = 0;
    for _ in 0..messages {
        c.send(b"MAIL FROM:<alice@bench.test>\r\nRCPT TO:<mmondor@example.org>\r\nDATA\r\n").await;
        for want in [250, 250, 354] {
            assert_eq!(reply(&mut c).await, want);
        }
        c.send(body.as_bytes()).await;
        c.send(b".\r\n").await;
        if reply(&mut c).await == 250 {
            stored += 1;
        }
    }
    c.send(b"QUIT\r\n").await;
    stored
}

/// `body` signed by dkimpy for bench.test, if python3 has it; the key's DNS form.
fn signed(dir: &std::path::Path, body: &str) -> Option<(String, String)> {
    let ok = std::process::Command::new("python3").args(["-c", "import dkim"]).status().ok()?.success();
    ok.then(|| {
        let (key, public) = dkim::rsa_key(dir);
        (dkim::sign("valid", &key, "sel", "bench.test", body), public)
    })
}

async fn round(dns: &TestDns, checks: bool, clients: u8, messages: usize, body: &str) -> f64 {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    let u = db.add_user("mmondor", "x").await;
    db.add_box("mmondor@example.org", u, 0, 0).await;
    let mut cfg = smtpd::config::Config::new(common::testing::shared("mx.example.org", &db.url));
    cfg.own.flood_messages = 0;
    cfg.listen.proxy_networks = vec!["127.0.0.0/8".parse().unwrap()];
    cfg.extra.checks.enabled = checks;
    cfg.extra.checks.exempt = Vec::new();
    cfg.extra.dns.servers = vec![dns.addr().to_string()];
    let server = Server::start(cfg).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    let server = std::sync::Arc::new(server);
    for n in 1..=clients {
        let (server, body) = (server.clone(), body.to_owned());
        tasks.push(tokio::spawn(async move { client(&server, n, messages, &body).await }));
    }
    let mut stored = 0;
    for t in tasks {
        stored += t.await.unwrap();
    }
    assert_eq!(stored, usize::from(clients) * messages, "every message stored");
    stored as f64 / started.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let clients = u8::try_from(*args.first().unwrap_or(&8)).unwrap().clamp(1, 200);
    let messages = *args.get(1).unwrap_or(&100);
    let rounds = *args.get(2).unwrap_or(&3);
    let dns = TestDns::start();
    for n in 1..=clients {
        let ip = Ipv4Addr::new(192, 0, 2, n);
        dns.add(&format!("{n}.2.0.192.in-addr.arpa"), Rec::Ptr(format!("host{n}.bench.test")));
        dns.add(&format!("host{n}.bench.test"), Rec::A(ip));
    }
    dns.add("bench.test", Rec::Txt(vec!["v=spf1 ip4:192.0.2.0/24 -all".into()]));
    dns.add("_dmarc.bench.test", Rec::Txt(vec!["v=DMARC1; p=reject".into()]));
    let text = format!(
        "From: Alice <alice@bench.test>\r\nTo: mmondor@example.org\r\nSubject: bench\r\n\r\n{}",
        "All work and no play makes a benchmark of 4 KiB.\r\n".repeat(80)
    );
    let dir = tempfile::tempdir().unwrap();
    let body = match signed(dir.path(), &text) {
        Some((signed, public)) => {
            dns.add("sel._domainkey.bench.test", Rec::Txt(vec![format!("v=DKIM1; k=rsa; p={public}")]));
            println!("messages DKIM-signed by dkimpy (RSA 2048)");
            signed
        }
        None => {
            println!("dkimpy not found: messages unsigned");
            text
        }
    };
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        off.push(round(&dns, false, clients, messages, &body).await);
        on.push(round(&dns, true, clients, messages, &body).await);
        println!("round {}: checks off {:.0} msg/s, on {:.0} msg/s", r + 1, off[r], on[r]);
    }
    let (off, on) = (median(&mut off), median(&mut on));
    println!(
        "{clients} clients x {messages} messages, medians: checks off {off:.0} msg/s, on {on:.0} msg/s, on/off {:.2} ({} DNS queries served)",
        on / off,
        dns.queries()
    );
}
