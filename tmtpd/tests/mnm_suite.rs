#![allow(clippy::unwrap_used)] // tests fail by panicking

//! mnm's own test suite (`mnm-test.json`, spec/tmtp.md §13) replayed over TCP+TLS
//! against a real mmtmtpd on every backend, with the runner's comparison rules: frames
//! are sorted into the sender's direct replies (G0), the sender's queued messages (G1)
//! and the primary receiver's messages (G2); order counts within a bucket, not across;
//! `#…#` placeholders and `headsum` 1/2 are wildcards (the headsum is recomputed
//! instead); the receiver's second node must get exactly G2, and the sender's second
//! node what §13.4 says.

mod support;

use std::time::{Duration, Instant};

use common::testing::TestDb;
use serde_json::{Value, json};
use support::{Frame, Peer, suite};

const OPS: [&str; 13] = [
    "eOpTmtpRev",
    "eOpRegister",
    "eOpLogin",
    "eOpUserEdit",
    "eOpOhiEdit",
    "eOpGroupInvite",
    "eOpGroupEdit",
    "eOpPost",
    "eOpPostNotify",
    "eOpPing",
    "eOpAck",
    "eOpPulse",
    "eOpQuit",
];

struct Names {
    send_uid: String,
    recv_uid: String,
    send_node: String,
    recv_node: String,
}

impl Names {
    fn sub(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(match s.as_str() {
                "*senduid" => self.send_uid.clone(),
                "*recvuid" => self.recv_uid.clone(),
                "*sendnode" => self.send_node.clone(),
                "*recvnode" => self.recv_node.clone(),
                _ => s.clone(),
            }),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.sub(x)).collect()),
            Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), self.sub(x))).collect()),
            other => other.clone(),
        }
    }
}

fn op_name(head: &Value) -> &str {
    head.get("Op").and_then(Value::as_str).unwrap_or("")
}

/// Expected frames of `want`, split into the three buckets.
fn buckets(want: &[Value]) -> [Vec<Value>; 3] {
    let mut b: [Vec<Value>; 3] = Default::default();
    for w in want {
        let i = if w["op"] == "ohi" {
            2
        } else if w.get("from").is_none() {
            0
        } else if w["headsum"] == 1 {
            1
        } else {
            2
        };
        b[i].push(w.clone());
    }
    b
}

fn wildcard(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() > 2 && s.starts_with('#') && s.ends_with('#'))
}

/// Compares one frame with its expectation; None when they match.
fn differs(want: &Value, got: &Frame) -> Option<String> {
    let mut want = want.as_object().unwrap().clone();
    let data: String = match want.remove("~data") {
        Some(Value::Array(parts)) => parts.iter().map(|p| p.as_str().unwrap()).collect(),
        _ => String::new(),
    };
    let got_head = got.head.as_object().unwrap();
    let mut keys_w: Vec<&String> = want.keys().collect();
    let mut keys_g: Vec<&String> = got_head.keys().collect();
    keys_w.sort();
    keys_g.sort();
    if keys_w != keys_g {
        return Some(format!("fields {keys_g:?}, want {keys_w:?}"));
    }
    for (k, w) in &want {
        let g = &got_head[k];
        let ok = if k == "headsum" {
            // Recompute it over the frame as it would be without headsum (spec §4.3).
            tmtpd::proto::message::headsum_ok(got_head) && g.is_u64()
        } else if wildcard(w) {
            g.as_str().is_some_and(|s| !s.is_empty())
        } else {
            w == g
        };
        if !ok {
            return Some(format!("{k}: {g}, want {w}"));
        }
    }
    (got.data != data.as_bytes()).then(|| format!("data {:?}, want {data:?}", String::from_utf8_lossy(&got.data)))
}

fn compare(name: &str, want: &[Value], got: &[Frame], problems: &mut Vec<String>) {
    if want.len() != got.len() {
        let got: Vec<String> = got.iter().map(|f| String::from_utf8_lossy(&f.raw).into_owned()).collect();
        problems.push(format!("{name}: {} frames, want {}: {got:#?}", got.len(), want.len()));
        return;
    }
    for (w, g) in want.iter().zip(got) {
        if let Some(d) = differs(w, g) {
            problems.push(format!("{name}: {d}\n    frame {}", String::from_utf8_lossy(&g.raw)));
        }
    }
}

fn skip_login(frames: Vec<Frame>) -> Vec<Frame> {
    frames.into_iter().filter(|f| !matches!(f.op(), "tmtprev" | "info" | "login")).collect()
}

fn raws(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|f| String::from_utf8_lossy(&f.raw).into_owned()).collect()
}

async fn replay(db: &TestDb) -> Vec<String> {
    let s = suite(&db.url, "").await;
    let addr = s.daemon.addr();
    let names = Names {
        send_uid: s.send.0.clone(),
        recv_uid: s.recv.0.clone(),
        send_node: s.send.1[0].clone(),
        recv_node: s.recv.1[0].clone(),
    };
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mnm-test.json")).unwrap();
    let entries: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(entries.len(), 59);

    // The three receivers log in first and ack everything, as in mnm's runner.
    let mut r0 = Peer::connect(addr, &s.cert, true).await;
    let mut r1 = Peer::connect(addr, &s.cert, true).await;
    let mut s1 = Peer::connect(addr, &s.cert, true).await;
    for (p, uid, node) in
        [(&mut r0, &s.recv.0, &s.recv.1[0]), (&mut r1, &s.recv.0, &s.recv.1[1]), (&mut s1, &s.send.0, &s.send.1[1])]
    {
        let got = p.login(uid, node).await;
        assert_eq!(got.last().map(Frame::op), Some("info"), "{:?}", raws(&got));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for p in [&mut r0, &mut r1, &mut s1] {
        p.drain(Duration::from_millis(200)).await;
    }

    let mut problems = Vec::new();
    let mut sender = Peer::connect(addr, &s.cert, true).await;
    for (i, e) in entries.iter().enumerate() {
        let mut head = Value::Null;
        let want: Option<Vec<Value>>;
        if e.get("tmtp").is_some() {
            sender = Peer::connect(addr, &s.cert, true).await;
            sender.send_head(json!({"Id":"1","Op":0}), b"").await;
            want = entries[0]["want"].as_array().cloned();
        } else if let Some(msg) = e.get("msg").and_then(Value::as_str) {
            if msg != "delay" {
                sender.send(msg.as_bytes()).await;
            }
            want = e["want"].as_array().cloned();
        } else {
            head = names.sub(&e["head"]);
            let op = OPS.iter().position(|o| *o == op_name(&head)).unwrap();
            head["Op"] = json!(op);
            if op == 1 && head.get("Oidc").is_none() {
                head["Oidc"] = json!({"id_token": s.oidc.valid(), "token_type": "Bearer", "expires_in": 60,
                                      "access_token": "a", "refresh_token": "r", "scope": "openid"});
            }
            let data: Vec<u8> = match (e.get("data"), e.get("datb")) {
                (Some(d), _) => d.as_str().unwrap().as_bytes().to_vec(),
                (None, Some(b)) => b.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u8).collect(),
                _ => Vec::new(),
            };
            sender.send_head(head.clone(), &data).await;
            want = e["want"].as_array().cloned();
        }
        let want: Vec<Value> = want.unwrap_or_default().iter().map(|w| names.sub(w)).collect();
        let [w0, w1, w2] = buckets(&want);

        // Collect until the expected frames are in (or 5 s), then a quiet spell.
        let delay = e.get("msg").and_then(Value::as_str) == Some("delay");
        let (mut at_sender, mut at_r0) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + if delay { Duration::from_secs(8) } else { Duration::from_secs(5) };
        while Instant::now() < deadline
            && (at_sender.len() < w0.len() + w1.len()
                || skip_login(at_r0.clone()).len() < w2.len()
                || (delay && !sender.is_closed()))
        {
            tokio::select! {
                Some(f) = sender.rx.recv() => at_sender.push(f),
                Some(f) = r0.rx.recv() => at_r0.push(f),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        at_sender.extend(sender.drain(Duration::from_millis(250)).await);
        at_r0.extend(r0.drain(Duration::from_millis(50)).await);
        let (g0, g1): (Vec<Frame>, Vec<Frame>) =
            at_sender.into_iter().partition(|f| f.head.get("from").is_none() || f.op() == "ohi");
        let g2 = skip_login(at_r0);
        compare(&format!("entry {i} G0"), &w0, &g0, &mut problems);
        compare(&format!("entry {i} G1"), &w1, &g1, &mut problems);
        compare(&format!("entry {i} G2"), &w2, &g2, &mut problems);
        if delay && !sender.is_closed() {
            problems.push(format!("entry {i}: the server did not close a link that never logged in"));
        }

        // Second devices (spec §13.4).
        let got_r1 = skip_login(r1.drain(Duration::from_millis(100)).await);
        if raws(&got_r1) != raws(&g2) {
            problems.push(format!("entry {i}: u100003.n1 got {:#?}, want G2 {:#?}", raws(&got_r1), raws(&g2)));
        }
        let got_s1 = skip_login(s1.drain(Duration::from_millis(100)).await);
        let nfsn = e.get("nfsn").is_some_and(|v| v == true);
        let op = op_name(&e["head"]);
        let want_s1: Vec<Frame> = if op == "eOpQuit" || (op == "eOpOhiEdit" && nfsn) {
            Vec::new()
        } else if op == "eOpGroupInvite" {
            g2.iter().chain(g1.iter()).cloned().collect()
        } else if op == "eOpPostNotify" {
            g2.last().cloned().into_iter().collect()
        } else if !g1.is_empty() && !nfsn {
            g1.clone()
        } else {
            g2.clone()
        };
        if raws(&got_s1) != raws(&want_s1) {
            problems.push(format!("entry {i}: u100002.n1 got {:#?}, want {:#?}", raws(&got_s1), raws(&want_s1)));
        }
        let _ = head;
    }
    if !problems.is_empty() {
        let log = s.daemon.log_text();
        let tail: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("refused"))
            .take(20)
            .collect();
        problems.push(format!("daemon log (warnings):\n{}", tail.join("\n")));
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn all_59_entries_of_mnms_test_suite_pass_over_tls() {
    // The backends run side by side: each has its own daemon and database.
    let mut runs = tokio::task::JoinSet::new();
    for db in TestDb::all().await {
        runs.spawn(async move {
            let problems = replay(&db).await;
            problems.into_iter().map(|p| format!("[{}] {p}", db.store.backend())).collect::<Vec<_>>()
        });
    }
    let mut all = Vec::new();
    while let Some(r) = runs.join_next().await {
        all.extend(r.unwrap());
    }
    assert!(all.is_empty(), "{} problems:\n{}", all.len(), all.join("\n"));
}
