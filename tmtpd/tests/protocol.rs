#![allow(clippy::unwrap_used)] // tests fail by panicking

//! A real mmtmtpd over TLS: every quit case of spec/tmtp.md §16.1, mnm's crash cases
//! (§15.1) answered normally, garbage before and after TLS, OpenID Connect registration,
//! and delivery (an offline node gets its backlog in order, an unacked message is sent
//! again, a restart between the sender's ack and the delivery loses nothing, a stop
//! records the acks received and gives up the links).

mod support;

use std::time::Duration;

use common::testing::{Backend, TestDb};
use serde_json::{Value, json};
use support::{Frame, Peer, Suite, suite, suite_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(5);

async fn sqlite() -> TestDb {
    TestDb::create(Backend::Sqlite).await.unwrap()
}

async fn rev(s: &Suite) -> Peer {
    let mut p = Peer::connect(s.daemon.addr(), &s.cert, true).await;
    p.send_head(json!({"Op":0,"Id":"1"}), b"").await;
    assert_eq!(p.next(WAIT).await.unwrap().op(), "tmtprev");
    p
}

async fn online(s: &Suite, uid: &str, node: &str) -> Peer {
    let mut p = Peer::connect(s.daemon.addr(), &s.cert, true).await;
    let got = p.login(uid, node).await;
    assert_eq!(got.last().unwrap().op(), "info");
    p
}

/// Sends `bytes`; expects the quit frame with `text` (or nothing when `text` is None)
/// and then the close.
async fn expect_quit(p: &mut Peer, bytes: &[u8], text: Option<&str>) {
    p.send(bytes).await;
    let frames = p.drain(Duration::from_millis(700)).await;
    let quits: Vec<&Frame> = frames.iter().filter(|f| f.op() == "quit").collect();
    match text {
        Some(t) => assert_eq!(quits.first().map(|f| f.head["error"].clone()), Some(json!(t)), "{frames:?}"),
        None => assert!(frames.is_empty(), "{frames:?}"),
    }
    tokio::time::timeout(WAIT, async {
        while !p.is_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("link not closed after {text:?}"));
    // RFC 8446 §6.1: the server ends the TLS session with close_notify.
    assert!(p.closed_cleanly(), "no TLS close_notify after {text:?}");
}

fn f(head: Value, data: &[u8]) -> Vec<u8> {
    let mut b = support::frame(&head);
    b.extend_from_slice(data);
    b
}

#[tokio::test(flavor = "multi_thread")]
async fn every_quit_case_gets_its_text_and_the_server_lives_on() {
    let db = sqlite().await;
    let s = suite(&db.url, "").await;
    let (su, sn) = (s.send.0.clone(), s.send.1[0].clone());
    let login = json!({"Op":2,"Uid":su,"Node":sn});

    expect_quit(&mut rev(&s).await, b"00z1{\"Op\":3, \"Uid\":\"noone\"}", Some("invalid header length")).await;
    expect_quit(&mut rev(&s).await, b"000a{\"Op\":12f3", Some("invalid header")).await;
    expect_quit(&mut rev(&s).await, &f(json!({"Op":2,"Uid":"u","Node":"none"}), b""), Some("corrupt base32 value"))
        .await;
    expect_quit(&mut rev(&s).await, &f(json!({"Op":0,"Id":"1"}), b""), Some("disallowed op repetition")).await;
    let post = f(json!({"Op":7,"Id":"p","Datalen":1,"For":[{"Id":"x","Type":1}]}), b"1");
    expect_quit(&mut rev(&s).await, &post, Some("disallowed op on unauthenticated link")).await;
    expect_quit(&mut rev(&s).await, &f(json!({"Op":12}), b""), Some("disallowed op on unauthenticated link")).await;
    // Errors before TmtpRev close silently (spec §3.4).
    let mut fresh = Peer::connect(s.daemon.addr(), &s.cert, true).await;
    expect_quit(&mut fresh, &f(login.clone(), b""), None).await;
    expect_quit(
        &mut rev(&s).await,
        &f(json!({"Op":1,"NewNode":"n","NewAlias":"_"}), b""),
        Some("authentication required"),
    )
    .await;
    expect_quit(&mut rev(&s).await, &f(json!({"Op":2,"Uid":"noone","Node":"LB27ML46"}), b""), Some("login failed"))
        .await;

    let mut me = online(&s, &su, &sn).await;
    expect_quit(&mut rev(&s).await, &f(login.clone(), b""), Some("node already connected")).await;
    me.drain(Duration::from_millis(300)).await;
    expect_quit(&mut me, &f(login.clone(), b""), Some("disallowed op on connected link")).await;
    let mut me = online(&s, &su, &sn).await;
    let long = vec![b'x'; 421];
    expect_quit(
        &mut me,
        &f(json!({"Op":9,"Id":"1","From":"test1","To":"test2","Datalen":421}), &long),
        Some("data too long for request type"),
    )
    .await;
    let mut me = online(&s, &su, &sn).await;
    let units = "😀".repeat(71); // 142 UTF-16 units in 284 bytes
    expect_quit(
        &mut me,
        &f(json!({"Op":9,"Id":"1","From":"test1","To":"test2","Datalen":units.len()}), units.as_bytes()),
        Some("data too long for request type"),
    )
    .await;
    let mut me = online(&s, &su, &sn).await;
    expect_quit(
        &mut me,
        &f(json!({"Op":9,"Id":"1","From":"test1","To":"test2","Datalen":3}), b"A\xffZ"),
        Some("data not valid UTF8"),
    )
    .await;
    let mut me = online(&s, &su, &sn).await;
    let pn = json!({"Op":8,"Id":"1","Datalen":5,"Notelen":5,"For":[{"Id":su,"Type":1}]});
    expect_quit(&mut me, &f(pn, b"12345"), Some("data too short for request type")).await;
    let mut me = online(&s, &su, &sn).await;
    let pn = json!({"Op":8,"Id":"1","Datalen":6,"Notelen":5,"For":[],"Fornotself":true});
    expect_quit(&mut me, &f(pn, b"123456"), Some("recipient list empty")).await;
    let mut me = online(&s, &su, &sn).await;
    expect_quit(&mut me, &f(json!({"Op":12}), b""), Some("logout ok")).await;
    // Still serving.
    online(&s, &su, &sn).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mnms_crash_cases_get_ordinary_answers() {
    let db = sqlite().await;
    let s = suite(&db.url, "").await;
    let (su, sn) = (s.send.0.clone(), s.send.1[0].clone());
    let long = "A".repeat(300);
    expect_quit(&mut rev(&s).await, &f(json!({"Op":2,"Uid":long,"Node":"LB27ML46"}), b""), Some("login failed")).await;
    let mut me = online(&s, &su, &sn).await;
    let acks = |frames: Vec<Frame>| frames.into_iter().filter(|f| f.op() == "ack").collect::<Vec<_>>();
    me.send(&f(json!({"Op":9,"Id":"p1","From":"test1","To":long,"Datalen":0}), b"")).await;
    me.send(&f(json!({"Op":7,"Id":"p2","Datalen":1,"For":[{"Id":long,"Type":1}]}), b"x")).await;
    me.send(&f(json!({"Op":7,"Id":"p3","Datalen":1,"For":[{"Id":long,"Type":2}]}), b"x")).await;
    me.send(&f(json!({"Op":4,"Id":"p4","Type":"add","For":[{"Id":long}]}), b"")).await;
    me.send(&f(json!({"Op":3,"Id":"p5","Newalias":"a".repeat(300)}), b"")).await;
    me.send(&f(json!({"Op":5,"Id":"p6","Gid":"g".repeat(300),"From":"test1","To":"test2","Datalen":0}), b"")).await;
    me.send(&f(json!({"Op":6,"Id":"p7","Gid":"g".repeat(300),"Act":"join"}), b"")).await;
    let got = acks(me.drain(Duration::from_millis(800)).await);
    let errors: Vec<(String, String)> = got
        .iter()
        .map(|a| {
            (
                a.head["id"].as_str().unwrap().to_owned(),
                a.head["error"].as_str().unwrap_or("").chars().take(40).collect(),
            )
        })
        .collect();
    assert_eq!(errors.len(), 7, "{errors:?}");
    for (id, e) in &errors {
        assert!(!e.is_empty(), "{id} got no error");
    }
    // A header of 64 KiB with a 420-byte ping: read normally (mnm crashed).
    let mut head = json!({"Op":9,"Id":"big","From":"test1","To":"test2","Datalen":420,"Pad":""});
    let json_len = serde_json::to_vec(&head).unwrap().len();
    head["Pad"] = json!("p".repeat(65535 - json_len));
    assert_eq!(serde_json::to_vec(&head).unwrap().len(), 65535);
    // 140 three-byte characters: 420 bytes and 140 UTF-16 units, both at the limit.
    me.send(&f(head, "€".repeat(140).as_bytes())).await;
    let all = me.drain(Duration::from_millis(1500)).await;
    let closed = me.is_closed();
    let got = acks(all.clone());
    assert_eq!(got.len(), 1, "closed {closed}: {:?}", all.iter().map(|f| f.head.clone()).collect::<Vec<_>>());
    assert!(got[0].head.get("msgid").is_some(), "{:?}", got[0].head);
    online(&s, &s.recv.0, &s.recv.1[0]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_before_and_after_tls_is_dropped_quietly() {
    let db = sqlite().await;
    let s = suite(&db.url, "").await;
    // Not TLS at all.
    let mut tcp = tokio::net::TcpStream::connect(s.daemon.addr()).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n\x00\xff\xfe").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.unwrap().unwrap_or(0);
    // rustls may answer with an alert; never with TMTP.
    assert!(!String::from_utf8_lossy(&buf[..n]).contains("op"), "{:?}", &buf[..n]);
    // Junk after the handshake, before TmtpRev: closed without a word.
    let mut p = Peer::connect(s.daemon.addr(), &s.cert, true).await;
    expect_quit(&mut p, &[0xffu8; 100], None).await;
    // Junk after login: a quit with the reason.
    let mut me = online(&s, &s.send.0, &s.send.1[0]).await;
    me.drain(Duration::from_millis(300)).await;
    expect_quit(&mut me, b"zzzz{}\x00\x01garbage-garbage", Some("invalid header length")).await;
    online(&s, &s.send.0, &s.send.1[0]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_needs_a_valid_token_when_auth_is_1() {
    let db = sqlite().await;
    let s = suite(&db.url, "").await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let register = |token: String| f(json!({"Op":1,"NewNode":"n","NewAlias":"_","Oidc":{"id_token":token}}), b"");
    for (what, token) in [
        ("expired", s.oidc.token(&json!({"aud":"audience","exp":now - 3600,"iss":"issuer","sub":"s"}))),
        ("wrong audience", s.oidc.token(&json!({"aud":"other","exp":now + 60,"iss":"issuer","sub":"s"}))),
        ("wrong issuer", s.oidc.token(&json!({"aud":"audience","exp":now + 60,"iss":"evil","sub":"s"}))),
        ("not a JWT", "abc.def".to_owned()),
    ] {
        let mut p = rev(&s).await;
        p.send(&register(token)).await;
        let got = p.drain(Duration::from_millis(600)).await;
        assert_eq!(got.first().map(|f| f.head["error"].clone()), Some(json!("authentication required")), "{what}");
    }
    // Signed by another key.
    let other = support::Oidc::generate(s.dir.path());
    let mut p = rev(&s).await;
    p.send(&register(other.valid())).await;
    assert_eq!(p.next(WAIT).await.unwrap().head["error"], "authentication required");
    // Valid: registered, logged in, and the identity kept with the account.
    let mut p = rev(&s).await;
    p.send(&register(s.oidc.valid())).await;
    let reg = p.next(WAIT).await.unwrap();
    assert_eq!(reg.op(), "registered");
    assert_eq!(p.next(WAIT).await.unwrap().op(), "info");
    let uid = reg.head["uid"].as_str().unwrap();
    assert_eq!(uid.len(), 32);
    let common::Store::Sqlite(pool) = &db.store else { panic!("sqlite") };
    let auth: (Option<String>,) =
        sqlx::query_as("SELECT tmtp_auth FROM tmtp_user WHERE tmtp_uid = ?1").bind(uid).fetch_one(pool).await.unwrap();
    assert!(auth.0.unwrap().contains("\"Subject\":\"subject\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn open_registration_and_the_new_accounts_first_steps() {
    let db = sqlite().await;
    let s = suite_with(&db.url, 0, "").await;
    let mut p = Peer::connect(s.daemon.addr(), &s.cert, true).await;
    p.send_head(json!({"Op":0,"Id":"1"}), b"").await;
    let rev = p.next(WAIT).await.unwrap();
    assert_eq!(rev.raw, b"0029{\"id\":\"1\",\"name\":\"Verify\",\"op\":\"tmtprev\"}", "auth 0 is not advertised");
    p.send_head(json!({"Op":1,"NewNode":"n","NewAlias":"new-member"}), b"").await;
    let reg = p.next(WAIT).await.unwrap();
    assert_eq!((reg.op(), reg.head.get("error")), ("registered", None));
    let (uid, nodeid) = (reg.head["uid"].as_str().unwrap().to_owned(), reg.head["nodeid"].as_str().unwrap().to_owned());
    assert_eq!(p.next(WAIT).await.unwrap().op(), "info");
    // Someone pings the new alias; the new account gets it.
    let other = online(&s, &s.send.0, &s.send.1[0]).await;
    other.send_head(json!({"Op":9,"Id":"hi","From":"test1","To":"new-member","Datalen":5}), b"hello").await;
    let ping = loop {
        let fr = p.next(WAIT).await.unwrap();
        if fr.op() == "ping" {
            break fr;
        }
    };
    assert_eq!((ping.head["alias"].clone(), ping.data.as_slice()), (json!("test1"), &b"hello"[..]));
    // The secret it was given logs in again later.
    expect_quit(&mut p, &f(json!({"Op":12}), b""), Some("logout ok")).await;
    online(&s, &uid, &nodeid).await;
}

async fn post(p: &Peer, id: &str, to: &str, data: &[u8]) {
    p.send_head(json!({"Op":7,"Id":id,"Datalen":data.len(),"For":[{"Id":to,"Type":1}]}), data).await;
}

async fn deliveries(p: &mut Peer, n: usize) -> Vec<Frame> {
    let mut out = Vec::new();
    while out.len() < n {
        let Some(fr) = p.next(Duration::from_secs(10)).await else { break };
        if fr.op() == "delivery" {
            out.push(fr);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offline_node_gets_its_backlog_in_order_and_a_big_post_whole() {
    let db = sqlite().await;
    let s = suite(&db.url, "").await;
    let mut me = online(&s, &s.send.0, &s.send.1[0]).await;
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    for i in 0..5 {
        post(&me, &format!("p{i}"), &s.recv.0, format!("message {i}").as_bytes()).await;
    }
    post(&me, "big", &s.recv.0, &big).await;
    let acks: Vec<Frame> = me.drain(Duration::from_millis(800)).await.into_iter().filter(|f| f.op() == "ack").collect();
    assert_eq!(acks.len(), 6);
    let mut r = online(&s, &s.recv.0, &s.recv.1[1]).await;
    let got = deliveries(&mut r, 6).await;
    let bodies: Vec<Vec<u8>> = got.iter().map(|f| f.data.clone()).collect();
    let mut want: Vec<Vec<u8>> = (0..5).map(|i| format!("message {i}").into_bytes()).collect();
    want.push(big);
    assert_eq!(bodies, want);
    let ids: Vec<&str> = got.iter().map(|f| f.head["id"].as_str().unwrap()).collect();
    let acked: Vec<&str> = acks.iter().map(|f| f.head["msgid"].as_str().unwrap()).collect();
    assert_eq!(ids, acked, "delivered in the order stored, under the ids the sender was told");
}

/// Streamed data (over one 64 KiB chunk) is written chunk by chunk as each arrives
/// whole, the first write also beginning the message and the ready also writing the
/// last chunk: every byte
/// arrives at each chunk boundary, for a post and for the notice of a PostNotify
/// streamed before its post; an upload cut short is not delivered, and what was
/// written of it is deleted.
#[tokio::test(flavor = "multi_thread")]
async fn streamed_data_arrives_whole_at_every_chunk_boundary() {
    let db = sqlite().await;
    let s = suite(&db.url, "").await;
    let mut me = online(&s, &s.send.0, &s.send.1[0]).await;
    let body = |n: u32, salt: u32| -> Vec<u8> { (0..n).map(|i| ((i * 7 + salt) % 251) as u8).collect() };
    let sizes = [65_537u32, 131_072, 131_073, 200_000];
    for (i, n) in sizes.iter().enumerate() {
        post(&me, &format!("s{i}"), &s.recv.0, &body(*n, i as u32)).await;
    }
    // A PostNotify whose notice (70 000 bytes, two chunks) and post (70 001) are both
    // streamed; the notice goes to the sender's other nodes, the post to the receiver.
    let (note, posted) = (body(70_000, 11), body(70_001, 12));
    let mut data = note.clone();
    data.extend_from_slice(&posted);
    let head = json!({"Op":8,"Id":"pn","Datalen":data.len(),"Notelen":note.len(),"For":[{"Id":s.recv.0,"Type":1}]});
    me.send_head(head, &data).await;
    let acks: Vec<Frame> =
        me.drain(Duration::from_millis(1500)).await.into_iter().filter(|f| f.op() == "ack").collect();
    assert_eq!(acks.len(), 5, "{acks:?}");
    assert!(acks.iter().all(|a| a.head.get("error").is_none()), "{acks:?}");
    // Cut short: 65 536 of 200 000 bytes. That first chunk is written as soon as it is
    // whole, not held until the next (the message begun under an id above every
    // other); then the link drops: what was written goes.
    let mut cut = Peer::connect(s.daemon.addr(), &s.cert, true).await;
    cut.login(&s.send.0, &s.send.1[1]).await;
    // The login note (spec §5.2) is stored before the login is answered.
    let stored = db.store.tmtp_max_message_id().await.unwrap();
    cut.send(&support::frame(&json!({"Op":7,"Id":"cut","Datalen":200_000,"For":[{"Id":s.recv.0,"Type":1}]}))).await;
    cut.send(&body(65_536, 99)).await;
    let store = &db.store;
    let max_id_becomes = |want: fn(i64, i64) -> bool| async move {
        for _ in 0..200 {
            if want(store.tmtp_max_message_id().await.unwrap(), stored) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(max_id_becomes(|now, stored| now > stored).await, "the cut upload's first chunk was never written");
    cut.hang_up().await;
    assert!(max_id_becomes(|now, stored| now == stored).await, "the cut upload was left in the store");

    let mut r = online(&s, &s.recv.0, &s.recv.1[0]).await;
    let (mut got, mut notices) = (Vec::new(), Vec::new());
    while got.len() < sizes.len() + 1 || notices.is_empty() {
        let Some(fr) = r.next(Duration::from_secs(10)).await else { break };
        match fr.op() {
            "delivery" => got.push(fr.data),
            "notify" => notices.push(fr.data),
            _ => {}
        }
    }
    let late = r.drain(Duration::from_millis(800)).await;
    assert!(late.iter().all(|f| f.op() != "delivery"), "the cut upload was delivered: {late:?}");
    let mut want: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, n)| body(*n, i as u32)).collect();
    want.push(posted);
    assert_eq!(got.len(), want.len());
    for (i, (b, w)) in got.iter().zip(&want).enumerate() {
        assert!(b == w, "message {i}: {} bytes arrived, {} sent", b.len(), w.len());
    }
    assert_eq!(notices.len(), 1);
    assert!(notices[0] == note, "notice: {} bytes arrived, {} sent", notices[0].len(), note.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unacked_message_is_sent_again() {
    let db = sqlite().await;
    let s = suite(&db.url, "ack_timeout = 1").await;
    let me = online(&s, &s.send.0, &s.send.1[0]).await;
    // A receiver that acks everything but deliveries.
    let mut r = Peer::connect(s.daemon.addr(), &s.cert, false).await;
    r.login(&s.recv.0, &s.recv.1[0]).await;
    post(&me, "once", &s.recv.0, b"again and again").await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let fr = r.next(Duration::from_secs(10)).await.expect("a frame");
        if fr.op() == "delivery" {
            got.push(fr);
        } else if fr.queued() {
            r.send_head(json!({"Op":10,"Id":fr.head["id"],"Type":"n"}), b"").await;
        }
    }
    let (first, second) = (vec![got[0].clone()], vec![got[1].clone()]);
    assert_eq!(first[0].raw, second[0].raw, "the same frame, sent again after the ack timeout");
    // After the ack it stops.
    let id = first[0].head["id"].as_str().unwrap().to_owned();
    r.send_head(json!({"Op":10,"Id":id,"Type":"n"}), b"").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.drain(Duration::from_millis(100)).await;
    assert!(r.drain(Duration::from_millis(1500)).await.iter().all(|f| f.op() != "delivery"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_between_the_senders_ack_and_the_delivery_loses_nothing() {
    let db = sqlite().await;
    let s = suite(&db.url, "").await;
    let mut me = online(&s, &s.send.0, &s.send.1[0]).await;
    post(&me, "kept", &s.recv.0, b"survives a restart").await;
    let ack = me.drain(Duration::from_millis(600)).await.into_iter().find(|f| f.op() == "ack").unwrap();
    let msgid = ack.head["msgid"].as_str().unwrap().to_owned();
    s.daemon.signal("TERM");
    let cfg = s.config.clone();
    let restarted = tokio::task::spawn_blocking(move || {
        let text = std::fs::read_to_string(&cfg).unwrap();
        common::testing::Daemon::start(&support::bin(), cfg.parent().unwrap(), |port| {
            let old = text.split("tls_addresses = [\"127.0.0.1:").nth(1).unwrap().split('"').next().unwrap();
            text.replace(&format!("127.0.0.1:{old}"), &format!("127.0.0.1:{port}"))
        })
    })
    .await
    .unwrap();
    let mut r = Peer::connect(restarted.addr(), &s.cert, true).await;
    r.login(&s.recv.0, &s.recv.1[0]).await;
    let got = deliveries(&mut r, 1).await;
    assert_eq!(got[0].head["id"], json!(msgid));
    assert_eq!(got[0].data, b"survives a restart");
}

/// A stop (SIGTERM) after the last connection ended still records the acks received and
/// gives up the nodes' links before the database is closed: the next instance sees the
/// node free at once and does not send an acked message again.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_records_the_acks_and_gives_up_the_links() {
    let db = sqlite().await;
    let mut s = suite(&db.url, "").await;
    let me = online(&s, &s.send.0, &s.send.1[0]).await;
    let mut r = online(&s, &s.recv.0, &s.recv.1[0]).await;
    for i in 0..20 {
        post(&me, &format!("s{i}"), &s.recv.0, format!("stop {i}").as_bytes()).await;
    }
    // The receiving peer acks each delivery as it reads it.
    assert_eq!(deliveries(&mut r, 20).await.len(), 20);
    // Its own post, answered, shows that the server has read all it sent before, the
    // last delivery's ack included: an ack still unread at the stop would only be sent
    // again, not recorded.
    post(&r, "sync", &s.send.0, b"sync").await;
    let answered = loop {
        let Some(fr) = r.next(Duration::from_secs(10)).await else { break false };
        if fr.op() == "ack" && fr.head["id"] == json!("sync") {
            break true;
        }
    };
    assert!(answered, "the receiving peer's post is acked");
    drop(me);
    drop(r);
    s.daemon.signal("TERM");
    let daemon = &mut s.daemon;
    assert!(tokio::task::block_in_place(|| daemon.wait_exit(Duration::from_secs(20))), "the daemon stops");
    let log = s.daemon.log_text();
    assert!(!log.contains("failed"), "nothing failed at the stop:\n{log}");
    // The first node of an account made by `mmtmtpd admin add-user` is number 1.
    let node = common::store::Node { uid: s.recv.0.clone(), num: 1 };
    assert!(db.store.tmtp_link_take(&node, "another", 1, 30).await.unwrap(), "the link was given up:\n{log}");
    assert_eq!(db.store.tmtp_queue(&s.recv.0, 1).await.unwrap(), vec![], "every ack was recorded:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn max_nodes_refuses_one_more_node() {
    let db = sqlite().await;
    // The fixtures give u100002 two nodes already.
    let s = suite(&db.url, "max_nodes = 2").await;
    let mut me = online(&s, &s.send.0, &s.send.1[0]).await;
    me.drain(Duration::from_millis(300)).await;
    me.send_head(json!({"Op":3,"Id":"n","Newnode":"third"}), b"").await;
    let ack = me.drain(Duration::from_millis(600)).await.into_iter().find(|f| f.op() == "ack").unwrap();
    assert_eq!(ack.head["error"], "AddNode: Exceeds 2 nodes");
}

/// PROXY protocol in front of mmtmtpd (as HAProxy in TCP mode sends it, before TLS): the
/// client the proxy names is the client the daemon logs; a proxy that sends no header is
/// closed on before any TLS.
#[tokio::test(flavor = "multi_thread")]
async fn proxied_nodes_are_known_by_the_named_client() {
    let db = sqlite().await;
    let s = suite(&db.url, "[listen]\nproxy_networks = [\"127.0.0.0/8\"]\n").await;
    let (su, sn) = (s.send.0.clone(), s.send.1[0].clone());
    let header = b"PROXY TCP4 192.0.2.77 127.0.0.1 45000 443\r\n";
    let mut p = Peer::connect_after(s.daemon.addr(), &s.cert, true, header).await;
    let got = p.login(&su, &sn).await;
    assert_eq!(got.last().unwrap().op(), "info", "{got:?}");
    // A bad frame ends the session with a quit, which the daemon logs with its client.
    // It must be at least a minimal frame (12 octets): shorter, the daemon waits for the
    // rest, as mnm does, and only a following frame (the client's ack of a message
    // arriving late) would have made it complete.
    p.send(b"00z1{\"Op\":0}").await;
    tokio::time::timeout(WAIT * 4, async {
        while !p.is_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("closed after a bad frame; log: {}", s.daemon.log_text()));
    let log = s.daemon.log_text();
    assert!(log.lines().any(|l| l.contains("quit") && l.contains("peer=192.0.2.77:45000")), "{log}");

    // No header from a trusted proxy: closed before the handshake.
    let mut raw = tokio::net::TcpStream::connect(s.daemon.addr()).await.unwrap();
    raw.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not a header").await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, raw.read(&mut buf)).await.expect("closed in time").unwrap_or(0);
    assert_eq!(n, 0, "the daemon answered a proxy that sent no header");
}
