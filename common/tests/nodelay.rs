//! Every connection the store opens to a PostgreSQL or MySQL/MariaDB server sends
//! without delay (`TCP_NODELAY`). sqlx 0.9.0 leaves the option off, and a query larger
//! than one TCP segment (a message body) then waits for the server's delayed
//! acknowledgement, 40 ms on Linux. Alone in its test binary: other tests' connections
//! being made at the same moment would be counted too.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::str::FromStr;

use common::store::{Delivery, MailCopy};
use common::testing::{Backend, TestDb};

#[tokio::test]
async fn database_connections_send_without_delay() {
    for db in TestDb::all().await {
        let port = match db.backend {
            Backend::Sqlite => continue,
            Backend::Postgres => sqlx::postgres::PgConnectOptions::from_str(&db.url).unwrap().get_port(),
            Backend::MySql => sqlx::mysql::MySqlConnectOptions::from_str(&db.url).unwrap().get_port(),
        };
        let u = db.add_user("nodelay", "x").await;
        db.add_box("nodelay@example.org", u, 0, 0).await;
        // Several deliveries at once of a body larger than a loopback segment, so that
        // the pool opens more than one connection.
        let body = vec![b'x'; 100 * 1024];
        let deliver = |i: usize| {
            let copies = vec![MailCopy {
                box_address: "nodelay@example.org".into(),
                uid: format!("nodelay-{i}"),
                trace: Vec::new(),
            }];
            let (s, body) = (&db.store, &body[..]);
            async move { s.deliver(&Delivery { body, copies }).await }
        };
        let (a, b, c, d) = tokio::join!(deliver(0), deliver(1), deliver(2), deliver(3));
        for r in [a, b, c, d] {
            r.unwrap();
        }
        let (with, without) = common::store::nodelay::census(port).unwrap();
        assert!(with >= 2, "{:?}: {with} connections to port {port} found", db.backend);
        assert_eq!(without, 0, "{:?}: {without} of {} connections without TCP_NODELAY", db.backend, with + without);
    }
}
