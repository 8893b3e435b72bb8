#![allow(clippy::unwrap_used)] // tests fail by panicking

//! mnm's own run of its verify pass (`mnm-verify-transcript.jsonl`, every frame both ways)
//! replayed against a real mmtmtpd over TLS: the client frames are sent as mnm's runner
//! sent them (node secrets and the OpenID Connect token swapped for this run's, the
//! clients' Acks replaced by acking what arrives), and every server frame must equal
//! mnm's byte for byte once the run-specific values are mapped: message ids, `posted`
//! times, the uid and node secret of accounts registered during the run, and `headsum`
//! (recomputed over our frame instead). Frames are compared per connection as multisets,
//! since mnm itself does not order a request's `ack` against queued messages (spec §5).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use common::testing::{Backend, TestDb};
use serde_json::Value;
use support::{Peer, suite};
use tokio::io::AsyncWriteExt;

fn is_hex16(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A server frame with run-specific values mapped, as canonical JSON plus data.
fn normalize(head: &Value, data: &[u8]) -> String {
    let mut h = head.as_object().unwrap().clone();
    for (k, v) in h.iter_mut() {
        let s = v.as_str().unwrap_or("");
        let mapped = match k.as_str() {
            "id" | "msgid" | "postid" if is_hex16(s) => Some("<ID>"),
            "posted" => Some("<TIME>"),
            "uid" => Some("<UID>"),
            "nodeid" => Some("<NODEID>"),
            "headsum" => Some("<HEADSUM>"),
            _ => None,
        };
        if let Some(m) = mapped {
            *v = Value::String(m.into());
        }
    }
    let mut out = String::from_utf8(tmtpd::proto::json::encode(&Value::Object(h))).unwrap();
    out.push_str(&String::from_utf8_lossy(data));
    out
}

/// Splits a server byte stream into (header, data) frames.
fn frames(mut bytes: &[u8]) -> Vec<(Value, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let h = usize::from_str_radix(std::str::from_utf8(&bytes[..4]).unwrap(), 16).unwrap();
        let head: Value = serde_json::from_slice(&bytes[4..4 + h]).unwrap();
        let n = head.get("datalen").and_then(Value::as_u64).unwrap_or(0) as usize;
        out.push((head, bytes[4 + h..4 + h + n].to_vec()));
        bytes = &bytes[4 + h + n..];
    }
    out
}

/// Bytes still missing from the last frame in `bytes` (0 when it is complete or not a
/// frame at all).
fn incomplete_by(mut bytes: &[u8]) -> usize {
    while bytes.len() >= 4 {
        let Some(h) = std::str::from_utf8(&bytes[..4]).ok().and_then(|t| usize::from_str_radix(t, 16).ok()) else {
            return 0;
        };
        if bytes.len() < 4 + h {
            return 4 + h - bytes.len();
        }
        let Ok(Value::Object(head)) = serde_json::from_slice::<Value>(&bytes[4..4 + h]) else { return 0 };
        let n = head.iter().find(|(k, _)| k.eq_ignore_ascii_case("datalen")).and_then(|(_, v)| v.as_u64()).unwrap_or(0)
            as usize;
        if bytes.len() < 4 + h + n {
            return 4 + h + n - bytes.len();
        }
        bytes = &bytes[4 + h + n..];
    }
    0
}

fn headsum_ok(head: &Value) -> bool {
    tmtpd::proto::message::headsum_ok(head.as_object().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mnms_own_run_replays_byte_for_byte() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    let s = suite(&db.url, "").await;
    let dir = env!("CARGO_MANIFEST_DIR");
    let suite_json: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/tests/data/mnm-test.json")).unwrap()).unwrap();
    let records: Vec<Value> = std::fs::read_to_string(format!("{dir}/tests/data/mnm-verify-transcript.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let bytes_of = |r: &Value| -> Vec<u8> {
        match (r.get("text"), r.get("b64")) {
            (Some(t), _) => t.as_str().unwrap().as_bytes().to_vec(),
            (None, Some(b)) => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(b.as_str().unwrap()).unwrap()
            }
            _ => Vec::new(),
        }
    };

    // mnm's node secrets -> this run's, learnt from each connection's own Login.
    let ours: HashMap<&str, &str> = HashMap::from([
        ("u100002.n0", s.send.1[0].as_str()),
        ("u100002.n1", s.send.1[1].as_str()),
        ("u100003.n0", s.recv.1[0].as_str()),
        ("u100003.n1", s.recv.1[1].as_str()),
    ]);
    let mut secrets: HashMap<String, String> = HashMap::new();
    for r in records.iter().filter(|r| r["dir"] == "C->S") {
        let text = String::from_utf8_lossy(&bytes_of(r)).into_owned();
        let conn = r["conn"].as_str().unwrap();
        let uid_matches = text.contains(&format!("\"Uid\":\"{}\"", &conn[..7]));
        if let Some(rest) = text.split("\"Node\":\"").nth(1)
            && uid_matches
        {
            let secret: String = rest.chars().take_while(|c| *c != '"').collect();
            if secret.len() == 40 {
                secrets.insert(secret, ours[conn].to_owned());
            }
        }
    }
    assert_eq!(secrets.len(), 4, "{secrets:?}");

    let mut peers: HashMap<String, Peer> = HashMap::new();
    let mut received: HashMap<String, Vec<u8>> = HashMap::new();
    let addr = s.daemon.addr();
    let collect = |peers: &mut HashMap<String, Peer>, received: &mut HashMap<String, Vec<u8>>| {
        for (name, p) in peers.iter_mut() {
            while let Ok(f) = p.rx.try_recv() {
                received.entry(name.clone()).or_default().extend_from_slice(&f.raw);
            }
        }
    };
    // A frame sent in several writes (entries 51-55) holds the connection's writer until
    // it is complete, so the peer's own Acks cannot land inside it.
    let mut held: Option<(String, tokio::sync::OwnedMutexGuard<tokio::io::WriteHalf<support::Tls>>, usize)> = None;
    for r in records.iter().filter(|r| r["dir"] == "C->S") {
        let conn = r["conn"].as_str().unwrap().to_owned();
        let entry = r.get("entry").and_then(Value::as_u64).map(|e| e as usize);
        let mut bytes = bytes_of(r);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        // The clients' Acks name mnm's message ids: our peers ack what arrives instead.
        if entry.is_none() && text.contains("\"Op\":10") {
            continue;
        }
        if let Some((c, guard, left)) = held.as_mut()
            && *c == conn
        {
            guard.write_all(&bytes).await.unwrap();
            guard.flush().await.unwrap();
            *left = left.saturating_sub(bytes.len());
            if *left == 0 {
                held = None;
            }
            tokio::time::sleep(Duration::from_millis(80)).await;
            continue;
        }
        let fresh = match entry {
            Some(0) => true,
            Some(e) => suite_json[e].get("tmtp").is_some(),
            None => !peers.contains_key(&conn),
        };
        if fresh {
            // The old link ends (quit or silent close) before its successor starts: wait
            // for that, so every frame it got is collected.
            if let Some(old) = peers.get(&conn) {
                for _ in 0..200 {
                    if old.is_closed() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
            collect(&mut peers, &mut received);
            peers.insert(conn.clone(), Peer::connect(addr, &s.cert, true).await);
        }
        for (theirs, mine) in &secrets {
            let replaced = String::from_utf8_lossy(&bytes).replace(theirs.as_str(), mine);
            if replaced.as_bytes() != bytes && std::str::from_utf8(&bytes).is_ok() {
                bytes = replaced.into_bytes();
            }
        }
        if text.contains("\"Oidc\"") {
            let mut head: Value = serde_json::from_slice(&bytes[4..]).unwrap();
            head["Oidc"]["Id_token"] = Value::String(s.oidc.valid());
            bytes = support::frame(&head);
        }
        let short = incomplete_by(&bytes);
        if short > 0 {
            let mut guard = peers[&conn].w.clone().lock_owned().await;
            guard.write_all(&bytes).await.unwrap();
            guard.flush().await.unwrap();
            held = Some((conn.clone(), guard, short));
        } else {
            peers[&conn].send(&bytes).await;
        }
        tokio::time::sleep(Duration::from_millis(if text.contains("\"Op\":7") || text.contains("\"Op\":8") {
            200
        } else {
            80
        }))
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    collect(&mut peers, &mut received);

    let mut problems = Vec::new();
    for name in ["u100002.n0", "u100002.n1", "u100003.n0", "u100003.n1"] {
        let mut theirs: Vec<String> = Vec::new();
        for r in records.iter().filter(|r| r["dir"] == "S->C" && r["conn"] == name) {
            for (h, d) in frames(&bytes_of(r)) {
                theirs.push(normalize(&h, &d));
            }
        }
        let mut mine: Vec<String> = Vec::new();
        for (h, d) in frames(received.get(name).map_or(&[][..], Vec::as_slice)) {
            if !headsum_ok(&h) {
                problems.push(format!("{name}: headsum wrong in {h}"));
            }
            mine.push(normalize(&h, &d));
        }
        theirs.sort();
        mine.sort();
        if theirs != mine {
            let missing: Vec<&String> = theirs.iter().filter(|t| !mine.contains(t)).collect();
            let mut extra: Vec<&String> = mine.iter().filter(|m| !theirs.contains(m)).collect();
            for m in &mine {
                let (a, b) = (mine.iter().filter(|x| *x == m).count(), theirs.iter().filter(|x| *x == m).count());
                if a > b && !extra.contains(&m) {
                    extra.push(m);
                }
            }
            let order: Vec<String> = frames(received.get(name).map_or(&[][..], Vec::as_slice))
                .iter()
                .map(|(h, _)| format!("{} {}", h["op"].as_str().unwrap_or(""), h["id"].as_str().unwrap_or("")))
                .collect();
            problems.push(format!(
                "{name}: {} frames vs mnm's {}\n  missing {missing:#?}\n  extra {extra:#?}\n  received in order {order:?}",
                mine.len(),
                theirs.len()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
