//! Who sent it (issue 14), end to end: mmsmtpd in-process against a DNS server on
//! loopback that the test runs (`common::testdns`). The clients connect over loopback
//! behind a PROXY protocol header naming a documentation address (192.0.2.0/24), so each
//! has reverse DNS of its own: 127.0.0.0/8 is `localhost` to any resolver (RFC 6761).
//! Nothing leaves the machine.

#![allow(clippy::unwrap_used)] // tests fail by panicking

#[path = "support/dkim.rs"]
mod dkim;
mod support;

use dkim::{have_dkimpy, rsa_key, sign};

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::testdns::{Rec, TestDns};
use common::testing::{Backend, TestDb};
use smtpd::config::{Config, DnsList, ListAction, ListStage, NullSender, Policy};
use support::{Client, Server, Smtp, config, messages, seed};

const GOOD: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const LIAR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const MUTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);

/// 192.0.2.1 is good.example.test and back; 192.0.2.2 claims liar.example.test, which
/// does not point back; 192.0.2.3's reverse zone never answers. example.net publishes
/// SPF for 192.0.2.1 only.
fn zone() -> TestDns {
    let dns = TestDns::start();
    dns.add("1.2.0.192.in-addr.arpa", Rec::Ptr("good.example.test".into()));
    dns.add("good.example.test", Rec::A(GOOD));
    dns.add("2.2.0.192.in-addr.arpa", Rec::Ptr("liar.example.test".into()));
    dns.add("liar.example.test", Rec::A(Ipv4Addr::new(192, 0, 2, 99)));
    dns.silence("3.2.0.192.in-addr.arpa");
    dns.add("example.net", Rec::Txt(vec!["v=spf1 ip4:192.0.2.1 -all".into()]));
    dns
}

/// Connects as `client`, through a PROXY v1 header from loopback.
async fn connect(server: &Server, client: Ipv4Addr) -> Client<tokio::net::TcpStream> {
    let mut c = Client::connect(server.addr).await;
    c.send(format!("PROXY TCP4 {client} 127.0.0.1 40000 25\r\n").as_bytes()).await;
    c
}

/// A seeded SQLite database and a config with the checks on, asking `dns`.
async fn setup(dns: &TestDns, tweak: impl FnOnce(&mut Config)) -> (TestDb, Config) {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    seed(&db).await;
    let mut cfg = config(&db.url);
    cfg.extra.checks.enabled = true;
    cfg.extra.checks.exempt = Vec::new();
    cfg.extra.dns.servers = vec![dns.addr().to_string()];
    cfg.extra.dns.timeout = 1;
    cfg.extra.dns.attempts = 1;
    cfg.listen.proxy_networks = vec!["127.0.0.0/8".parse().unwrap()];
    tweak(&mut cfg);
    (db, cfg)
}

/// Sends one message from `source` with reverse-path `from`; the reply to the end of
/// DATA (or the first refusal: "MAIL <code>" / "RCPT <code>").
async fn send(server: &Server, source: Ipv4Addr, from: &str, body: &str) -> String {
    let mut c = connect(server, source).await;
    let (code, text) = c.reply().await.unwrap();
    if code != 220 {
        return format!("{code} {text}");
    }
    assert_eq!(c.cmd("EHLO client.example.net").await, 250);
    let (code, text) = c.cmd_reply(&format!("MAIL FROM:<{from}>")).await;
    if code != 250 {
        return format!("MAIL {code} {text}");
    }
    let (code, text) = c.cmd_reply("RCPT TO:<mmondor@example.org>").await;
    if code != 250 {
        return format!("RCPT {code} {text}");
    }
    assert_eq!(c.cmd("DATA").await, 354);
    c.send(format!("{body}\r\n.\r\n").as_bytes()).await;
    let (code, text) = c.reply().await.unwrap();
    c.cmd("QUIT").await;
    format!("{code} {text}")
}

fn header_of(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    text.split("\r\n\r\n").next().unwrap().to_owned()
}

#[tokio::test]
async fn rdns_matches_does_not_match_and_times_out() {
    let dns = zone();
    let (db, cfg) = setup(&dns, |_| {}).await;
    let server = Server::start(cfg).await;
    let body = "From: a@example.net\r\nSubject: rdns\r\n\r\nhello";
    for source in [GOOD, LIAR, MUTE] {
        let started = Instant::now();
        let reply = send(&server, source, "a@example.net", body).await;
        assert!(reply.starts_with("250 "), "{source}: {reply}");
        // Informational: the silent reverse zone costs at most the 1 s DNS timeout.
        eprintln!("{source}: {:?}", started.elapsed());
    }
    let stored = messages(&db, "mmondor@example.org").await;
    assert_eq!(stored.len(), 3);
    let heads: Vec<String> = stored.iter().map(|m| header_of(m)).collect();
    assert!(heads[0].contains("Received: from client.example.net (good.example.test [192.0.2.1])"), "{}", heads[0]);
    assert!(heads[0].contains("iprev=pass"), "{}", heads[0]);
    assert!(heads[0].contains("spf=pass"), "{}", heads[0]);
    assert!(heads[1].contains("(unknown [192.0.2.2])"), "{}", heads[1]);
    assert!(heads[1].contains("iprev=fail"), "{}", heads[1]);
    assert!(heads[1].contains("spf=fail"), "{}", heads[1]);
    assert!(heads[2].contains("(unknown [192.0.2.3])"), "{}", heads[2]);
    assert!(heads[2].contains("iprev=temperror"), "{}", heads[2]);
    for h in &heads {
        assert_eq!(h.matches("Authentication-Results: mx.example.org;").count(), 1, "{h}");
    }
}

#[tokio::test]
async fn nofrom_matches_verified_host_names_with_resolve_hosts() {
    let dns = zone();
    let (db, cfg) = setup(&dns, |c| {
        c.own.null_sender = NullSender::Nofrom;
        c.own.resolve_hosts = true;
    })
    .await;
    db.add_nofrom("*.example.test").await;
    let server = Server::start(cfg).await;
    assert!(send(&server, GOOD, "", "Subject: bounce\r\n\r\nx").await.starts_with("250 "));
    // liar.example.test is its PTR, but not a verified name.
    let refused = send(&server, LIAR, "", "Subject: bounce\r\n\r\nx").await;
    assert!(refused.starts_with("MAIL 550 5.7.1"), "{refused}");
}

#[tokio::test]
async fn policies_refuse_spf_and_rdns_failures_and_never_5xx_a_timeout() {
    let dns = zone();
    let (_db, cfg) = setup(&dns, |c| {
        c.extra.checks.spf = Policy::Reject;
        c.extra.checks.rdns = Policy::Reject;
    })
    .await;
    let server = Server::start(cfg).await;
    assert!(send(&server, GOOD, "a@example.net", "Subject: ok\r\n\r\nx").await.starts_with("250 "));
    let liar = send(&server, LIAR, "a@example.net", "Subject: no\r\n\r\nx").await;
    assert!(liar.starts_with("MAIL 550 5.7.25"), "{liar}");
    let mute = send(&server, MUTE, "a@example.net", "Subject: later\r\n\r\nx").await;
    assert!(mute.starts_with("MAIL 451 4.4.3"), "{mute}");

    let (_db, cfg) = setup(&dns, |c| c.extra.checks.spf = Policy::Reject).await;
    let server = Server::start(cfg).await;
    let spf = send(&server, LIAR, "a@example.net", "Subject: no\r\n\r\nx").await;
    assert!(spf.starts_with("MAIL 550 5.7.23"), "{spf}");
    let (_db, cfg) = setup(&dns, |c| c.extra.checks.spf = Policy::Tempfail).await;
    let server = Server::start(cfg).await;
    let spf = send(&server, LIAR, "a@example.net", "Subject: no\r\n\r\nx").await;
    assert!(spf.starts_with("MAIL 451 4.7.23"), "{spf}");
}

#[tokio::test]
async fn dns_lists_refuse_listed_clients_at_connect_or_rcpt() {
    let dns = zone();
    dns.add("2.2.0.192.block.test", Rec::A(Ipv4Addr::new(127, 0, 0, 2)));
    dns.add("3.2.0.192.late.test", Rec::A(Ipv4Addr::new(127, 0, 0, 4)));
    // A list's error code is not a listing.
    dns.add("1.2.0.192.block.test", Rec::A(Ipv4Addr::new(127, 255, 255, 254)));
    let list = |zone: &str, stage| DnsList {
        zone: zone.into(),
        action: ListAction::Reject,
        answers: vec!["127.0.0.2/31".parse().unwrap(), "127.0.0.4/32".parse().unwrap()],
        stage,
    };
    let (db, cfg) = setup(&dns, |c| {
        c.extra.checks.enabled = false;
        c.extra.dnsbl = vec![list("block.test", ListStage::Connect), list("late.test", ListStage::Rcpt)];
    })
    .await;
    let server = Server::start(cfg).await;
    assert!(send(&server, GOOD, "a@example.net", "Subject: ok\r\n\r\nx").await.starts_with("250 "));
    let listed = send(&server, LIAR, "a@example.net", "Subject: no\r\n\r\nx").await;
    assert!(listed.starts_with("554 5.7.1 mx.example.org Service unavailable"), "{listed}");
    assert!(listed.contains("block.test"), "{listed}");
    let at_rcpt = send(&server, MUTE, "a@example.net", "Subject: no\r\n\r\nx").await;
    assert!(at_rcpt.starts_with("RCPT 554 5.7.1"), "{at_rcpt}");
    // Postmaster is still reachable from a client listed at RCPT.
    let mut c = connect(&server, MUTE).await;
    assert_eq!(c.code().await, 220);
    c.cmd("HELO x").await;
    assert_eq!(c.cmd("MAIL FROM:<a@example.net>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<postmaster@example.org>").await, 250);
    assert_eq!(messages(&db, "mmondor@example.org").await.len(), 1);
}

#[tokio::test]
async fn a_dns_server_that_never_answers_delays_a_session_by_the_timeout_at_most() {
    let dns = zone();
    for name in ["1.2.0.192.in-addr.arpa", "example.net", "1.2.0.192.block.test"] {
        dns.silence(name);
    }
    let (db, cfg) = setup(&dns, |c| {
        c.extra.dnsbl = vec![DnsList {
            zone: "block.test".into(),
            action: ListAction::Reject,
            answers: Vec::new(),
            stage: ListStage::Connect,
        }];
    })
    .await;
    let server = Server::start(cfg).await;
    let started = Instant::now();
    let reply = send(&server, GOOD, "a@example.net", "From: a@example.net\r\n\r\nx").await;
    assert!(reply.starts_with("250 "), "{reply}");
    eprintln!("session with a silent DNS server: {:?} (timeout 1 s)", started.elapsed());
    let head = header_of(&messages(&db, "mmondor@example.org").await[0]);
    assert!(head.contains("iprev=temperror"), "{head}");
    assert!(head.contains("spf=temperror"), "{head}");
}

#[tokio::test]
async fn greylisting_is_shared_by_two_instances_on_one_database() {
    let dns = zone();
    let (db, cfg) = setup(&dns, |c| {
        c.extra.checks.enabled = false;
        c.extra.greylist.enabled = true;
        c.extra.greylist.delay = 2;
    })
    .await;
    let one = Server::start(cfg.clone()).await;
    let two = Server::start(cfg).await;
    let first = send(&one, GOOD, "a@example.net", "Subject: grey\r\n\r\nx").await;
    assert!(first.starts_with("451 4.7.1 Greylisted"), "{first}");
    // The other instance knows the triplet: still too early.
    let early = send(&two, GOOD, "a@example.net", "Subject: grey\r\n\r\nx").await;
    assert!(early.starts_with("451 4.7.1 Greylisted"), "{early}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let retry = send(&two, GOOD, "a@example.net", "Subject: grey\r\n\r\nx").await;
    assert!(retry.starts_with("250 "), "{retry}");
    // Passed: the first instance takes the next one at once; a new sender waits.
    assert!(send(&one, GOOD, "a@example.net", "Subject: again\r\n\r\nx").await.starts_with("250 "));
    assert!(send(&one, GOOD, "b@example.net", "Subject: new\r\n\r\nx").await.starts_with("451 "));
    assert_eq!(messages(&db, "mmondor@example.org").await.len(), 2);
}

#[tokio::test]
async fn forged_results_claiming_this_server_are_removed() {
    let dns = zone();
    let (db, cfg) = setup(&dns, |_| {}).await;
    let server = Server::start(cfg).await;
    let body = "Authentication-Results: mx.example.org; spf=pass; dkim=pass\r\n\
                Authentication-Results: other.example; dkim=fail\r\nFrom: a@example.net\r\n\r\nx";
    assert!(send(&server, LIAR, "a@example.net", body).await.starts_with("250 "));
    let head = header_of(&messages(&db, "mmondor@example.org").await[0]);
    assert_eq!(head.matches("Authentication-Results: mx.example.org;").count(), 1, "{head}");
    assert!(!head.contains("dkim=pass"), "{head}");
    assert!(head.contains("Authentication-Results: other.example; dkim=fail"), "{head}");
}

/// The zone of [`zone`] plus a DKIM key published as each `(selector, domain)`; the
/// key's directory and file. `None` (the test is skipped) without dkimpy or openssl.
fn signing_zone(keys: &[(&str, &str)]) -> Option<(tempfile::TempDir, std::path::PathBuf, TestDns)> {
    if !have_dkimpy() || !common::testing::have("openssl") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = rsa_key(dir.path());
    let dns = zone();
    for (selector, domain) in keys {
        dns.add(&format!("{selector}._domainkey.{domain}"), Rec::Txt(vec![format!("v=DKIM1; k=rsa; p={public}")]));
    }
    Some((dir, key, dns))
}

/// DKIM signatures made by dkimpy — valid, body changed, signed header changed, key
/// missing, expired — and DMARC p=none, p=quarantine and p=reject, over the sender
/// domains' own DNS records. SPF fails for every one, so DMARC rests on DKIM alignment.
#[tokio::test]
async fn dkim_signatures_by_dkimpy_and_dmarc_policies() {
    let keys = [("sel", "none.test"), ("sel", "quarantine.test"), ("sel", "reject.test")];
    let Some((_dir, key, dns)) = signing_zone(&keys) else { return };
    for (domain, policy) in [("none.test", "none"), ("quarantine.test", "quarantine"), ("reject.test", "reject")] {
        dns.add(&format!("_dmarc.{domain}"), Rec::Txt(vec![format!("v=DMARC1; p={policy}")]));
        dns.add(domain, Rec::Txt(vec!["v=spf1 -all".into()]));
    }
    let (db, cfg) = setup(&dns, |_| {}).await;
    let server = Server::start(cfg).await;
    let message = |domain: &str| {
        format!("From: Alice <alice@{domain}>\r\nTo: mmondor@example.org\r\nSubject: signed\r\n\r\nThe body.\r\n")
    };
    let deliver = |from: String, text: String| {
        let server = &server;
        async move { send(server, GOOD, &from, text.trim_end_matches("\r\n")).await }
    };

    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("valid", sign("valid", &key, "sel", "none.test", &message("none.test")), "dkim=pass", "dmarc=pass"),
        (
            "body changed",
            sign("valid", &key, "sel", "none.test", &message("none.test")).replace("The body.", "Another body."),
            "dkim=neutral (body hash did not verify)",
            "dmarc=fail",
        ),
        (
            "signed header changed",
            sign("valid", &key, "sel", "none.test", &message("none.test"))
                .replace("Subject: signed", "Subject: changed"),
            "dkim=fail (verification failed)",
            "dmarc=fail",
        ),
        (
            "key missing",
            sign("valid", &key, "gone", "none.test", &message("none.test")),
            "dkim=permerror (dns record not found)",
            "dmarc=fail",
        ),
        (
            "expired",
            sign("expired", &key, "sel", "none.test", &message("none.test")),
            "dkim=neutral (signature error)",
            "dmarc=fail",
        ),
    ];
    for (what, text, dkim, dmarc) in &cases {
        let reply = deliver("alice@none.test".into(), text.clone()).await;
        assert!(reply.starts_with("250 "), "{what}: {reply}");
        let stored = messages(&db, "mmondor@example.org").await;
        let head = header_of(stored.last().unwrap());
        assert!(head.contains(dkim), "{what}: {head}");
        assert!(head.contains(dmarc), "{what}: {head}");
        assert!(head.contains("policy.dmarc=none"), "{what}: {head}");
    }

    // p=quarantine: a failure is stored, and says so.
    let forged = message("quarantine.test");
    let reply = deliver("alice@quarantine.test".into(), forged).await;
    assert!(reply.starts_with("250 "), "{reply}");
    let head = header_of(messages(&db, "mmondor@example.org").await.last().unwrap());
    assert!(head.contains("dmarc=fail") && head.contains("policy.dmarc=quarantine"), "{head}");

    // p=reject: a failure is refused (dmarc_reject, the default); a signed one passes.
    let forged = message("reject.test");
    let reply = deliver("alice@reject.test".into(), forged).await;
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    let signed = sign("valid", &key, "sel", "reject.test", &message("reject.test"));
    let reply = deliver("alice@reject.test".into(), signed).await;
    assert!(reply.starts_with("250 "), "{reply}");
    assert_eq!(messages(&db, "mmondor@example.org").await.len(), cases.len() + 2);
}

/// A mailing list (lists.test) changes the Subject of a message DKIM-signed by its
/// author's domain, which breaks the signature, and seals what it saw with ARC
/// (dkimpy's `arc_sign`): the chain verifies, the author's signature does not.
#[tokio::test]
async fn an_arc_sealed_forward_verifies_where_the_signature_broke() {
    let Some((_dir, key, dns)) = signing_zone(&[("sel", "none.test"), ("arc", "lists.test")]) else { return };
    dns.add("_dmarc.none.test", Rec::Txt(vec!["v=DMARC1; p=none".into()]));
    let original = sign(
        "valid",
        &key,
        "sel",
        "none.test",
        "From: Alice <alice@none.test>\r\nTo: list@lists.test\r\nSubject: signed\r\n\r\nThe body.\r\n",
    );
    let forwarded = format!(
        "Authentication-Results: lists.test; dkim=pass header.d=none.test\r\n{}",
        original.replace("Subject: signed", "Subject: [list] signed")
    );
    let sealed = sign("arc", &key, "arc", "lists.test", &forwarded);
    assert!(sealed.starts_with("ARC-Seal:"), "{sealed}");
    let (db, cfg) = setup(&dns, |_| {}).await;
    let server = Server::start(cfg).await;
    let reply = send(&server, GOOD, "list-bounces@lists.test", sealed.trim_end_matches("\r\n")).await;
    assert!(reply.starts_with("250 "), "{reply}");
    let head = header_of(&messages(&db, "mmondor@example.org").await[0]);
    assert!(head.contains("arc=pass"), "{head}");
    assert!(head.contains("dkim=fail"), "{head}");
}

/// Greylisting lets through, at once, a message with a DKIM signature aligned with its
/// From: domain, and any message from a client on an allow list; others wait.
#[tokio::test]
async fn aligned_dkim_and_allow_listed_clients_skip_greylisting() {
    let Some((_dir, key, dns)) = signing_zone(&[("sel", "none.test")]) else { return };
    dns.add("_dmarc.none.test", Rec::Txt(vec!["v=DMARC1; p=none".into()]));
    dns.add("3.2.0.192.allow.test", Rec::A(Ipv4Addr::new(127, 0, 10, 1)));
    let (db, cfg) = setup(&dns, |c| {
        c.extra.greylist.enabled = true;
        c.extra.dnsbl = vec![DnsList {
            zone: "allow.test".into(),
            action: ListAction::Allow,
            answers: vec!["127.0.0.0/8".parse().unwrap()],
            stage: ListStage::Connect,
        }];
    })
    .await;
    let server = Server::start(cfg).await;
    let text = "From: Alice <alice@none.test>\r\nTo: mmondor@example.org\r\nSubject: signed\r\n\r\nThe body.\r\n";
    let signed = sign("valid", &key, "sel", "none.test", text);
    let reply = send(&server, GOOD, "alice@none.test", signed.trim_end_matches("\r\n")).await;
    assert!(reply.starts_with("250 "), "aligned DKIM: {reply}");
    let reply = send(&server, GOOD, "alice@none.test", text.trim_end_matches("\r\n")).await;
    assert!(reply.starts_with("451 4.7.1 Greylisted"), "unsigned: {reply}");
    let reply = send(&server, MUTE, "bob@elsewhere.test", "Subject: allowed\r\n\r\nx").await;
    assert!(reply.starts_with("250 "), "allow-listed: {reply}");
    assert_eq!(messages(&db, "mmondor@example.org").await.len(), 2);
}

/// Every verdict is counted, per result and in total (`mmsmtpd|checks|…`), and policy
/// refusals as `failed|policy|<ip>`: read from the datagrams sent to a socket of the
/// test's own where mmstatd would listen.
#[tokio::test]
async fn verdicts_are_counted_per_result_and_in_total() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("mmstatd.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    // Read as they come: a datagram socket queues only a few (net.unix.max_dgram_qlen).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buf = [0u8; 65536];
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(_) if stop.load(std::sync::atomic::Ordering::Relaxed) => return seen,
                Err(_) => {}
            }
        }
    });
    let dns = zone();
    let (_db, cfg) = setup(&dns, |c| {
        c.stats.enabled = true;
        c.stats.socket = socket_path.clone();
        c.extra.checks.spf = Policy::Reject;
    })
    .await;
    let server = Server::start(cfg).await;
    assert!(send(&server, GOOD, "a@example.net", "From: a@example.net\r\n\r\nx").await.starts_with("250 "));
    let refused = send(&server, LIAR, "a@example.net", "From: a@example.net\r\n\r\nx").await;
    assert!(refused.starts_with("MAIL 550"), "{refused}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.join().unwrap();
    for key in [
        "mmsmtpd|checks|iprev|pass",
        "mmsmtpd|checks|iprev|total",
        "mmsmtpd|checks|spf|pass",
        "mmsmtpd|checks|spf|total",
        "mmsmtpd|checks|spf-helo|none",
        "mmsmtpd|checks|dkim|none",
        "mmsmtpd|checks|dmarc|none",
        "mmsmtpd|checks|arc|none",
        "mmsmtpd|failed|policy|192.0.2.2",
    ] {
        assert!(seen.contains(key), "{key} not counted in:\n{seen}");
    }
}

/// The policies decided after DATA: `dkim = "reject"` refuses a message whose only
/// signature fails, `dmarc = "tempfail"` defers a DMARC failure of a p=quarantine
/// domain, and `dmarc_reject = false` stores a failure of a p=reject domain.
#[tokio::test]
async fn policies_after_data_do_what_the_config_says() {
    let keys = [("sel", "none.test"), ("sel", "quarantine.test"), ("sel", "reject.test")];
    let Some((_dir, key, dns)) = signing_zone(&keys) else { return };
    for (domain, policy) in [("none.test", "none"), ("quarantine.test", "quarantine"), ("reject.test", "reject")] {
        dns.add(&format!("_dmarc.{domain}"), Rec::Txt(vec![format!("v=DMARC1; p={policy}")]));
        dns.add(domain, Rec::Txt(vec!["v=spf1 -all".into()]));
    }
    let message =
        |domain: &str| format!("From: <alice@{domain}>\r\nTo: mmondor@example.org\r\nSubject: signed\r\n\r\nBody.\r\n");
    let broken = sign("valid", &key, "sel", "none.test", &message("none.test")).replace("Body.", "Changed.");

    let (_db, cfg) = setup(&dns, |c| c.extra.checks.dkim = Policy::Reject).await;
    let server = Server::start(cfg).await;
    let reply = send(&server, GOOD, "alice@none.test", broken.trim_end_matches("\r\n")).await;
    assert!(reply.starts_with("550 5.7.20"), "{reply}");

    let (_db, cfg) = setup(&dns, |c| c.extra.checks.dmarc = Policy::Tempfail).await;
    let server = Server::start(cfg).await;
    let reply = send(&server, GOOD, "alice@quarantine.test", message("quarantine.test").trim_end_matches("\r\n")).await;
    assert!(reply.starts_with("451 4.7.1"), "{reply}");

    let (db, cfg) = setup(&dns, |c| c.own.dmarc_reject = false).await;
    let server = Server::start(cfg).await;
    let reply = send(&server, GOOD, "alice@reject.test", message("reject.test").trim_end_matches("\r\n")).await;
    assert!(reply.starts_with("250 "), "{reply}");
    let head = header_of(&messages(&db, "mmondor@example.org").await[0]);
    assert!(head.contains("dmarc=fail") && head.contains("policy.dmarc=reject"), "{head}");
}
