#![allow(clippy::unwrap_used)] // tests fail by panicking

//! The load generator at a small size (20 clients, two cycles each, no pauses) against
//! a real mmtmtpd over TLS: every promised delivery arrives, nothing else, headsums
//! check out.

use common::testing::{Backend, Daemon, ROOT_OK, TestCert, TestDb, sibling_bin};

/// A real mmtmtpd with open registration on `url`, TLS with a fresh certificate.
fn mmtmtpd(dir: &std::path::Path, url: &str, cert: &TestCert) -> Daemon {
    let bin = sibling_bin(std::path::Path::new(env!("CARGO_BIN_EXE_mmtmtpd-load")), "mmtmtpd", "tmtpd");
    let (c, k) = (cert.cert.display(), cert.key.display());
    Daemon::start(&bin, dir, |port| {
        format!(
            "[server]\nname = \"t.example.org\"\n[database]\nurl = \"{url}\"\n[listen]\ntls_addresses = [\"127.0.0.1:{port}\"]\n\
             [tls]\ncert = \"{c}\"\nkey = \"{k}\"\n[limits]\nmax_per_address = 0\nconnection_rate = 0\nerror_delay = 0\n\
             [stats]\nenabled = false\n[tmtpd]\nauth = 0\n{ROOT_OK}"
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_clients_get_every_message_exactly_once() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate(dir.path());
    let (d, url, c) = (dir.path().to_path_buf(), db.url.clone(), TestCert { der: cert.der.clone(), ..cert });
    let daemon = tokio::task::spawn_blocking(move || mmtmtpd(&d, &url, &c)).await.unwrap();
    let cert_path = dir.path().join("cert.pem");
    let opts = tmtp_load::Options {
        addr: daemon.addr(),
        ca: cert_path,
        server_name: "localhost".into(),
        clients: 20,
        cycles: 2,
        sleep_scale: 0.0,
        sizes: vec![80, 400, 2000, 10000],
        server_pid: Some(daemon.pid()),
        tag: "t".into(),
    };
    let report = tmtp_load::run(opts).await.unwrap();
    println!("{report}");
    assert!(report.ok(), "{report}");
    // 20 clients x 2 cycles x 16 steps (a ping or post each).
    assert_eq!(report.messages, 640, "{report}");
    assert!(report.deliveries > report.messages * 2, "{report}");
    assert!(report.server_rss_kib.is_some());
}
