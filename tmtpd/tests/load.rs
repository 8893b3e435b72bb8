#![allow(clippy::unwrap_used)] // tests fail by panicking

//! The load generator at a small size (20 clients, two cycles each, no pauses) against
//! a real mmtmtpd over TLS: every promised delivery arrives, nothing else, headsums
//! check out.

mod support;

use common::testing::{Backend, TestDb};
use support::suite_with;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_clients_get_every_message_exactly_once() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    let s = suite_with(&db.url, 0, "").await;
    let opts = tmtpd::load::Options {
        addr: s.daemon.addr(),
        ca: s.cert.cert.clone(),
        server_name: "localhost".into(),
        clients: 20,
        cycles: 2,
        sleep_scale: 0.0,
        sizes: vec![80, 400, 2000, 10000],
        server_pid: Some(s.daemon.pid()),
        tag: "t".into(),
    };
    let report = tmtpd::load::run(opts).await.unwrap();
    println!("{report}");
    assert!(report.ok(), "{report}");
    // 20 clients x 2 cycles x 16 steps (a ping or post each).
    assert_eq!(report.messages, 640, "{report}");
    assert!(report.deliveries > report.messages * 2, "{report}");
    assert!(report.server_rss_kib.is_some());
}
