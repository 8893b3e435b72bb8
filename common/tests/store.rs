//! Store conformance: the same assertions on SQLite, PostgreSQL and MySQL/MariaDB
//! (style.md P11 (d)). See `common::testing` for the backend environment variables.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::str::FromStr;

use common::address::Address;
use common::store::{DeliverError, Delivery, MailCopy, Resolution, Update, Usage};
use common::testing::TestDb;

fn addr(s: &str) -> Address {
    Address::parse(s, true).unwrap()
}

fn copy(box_address: &str, uid: &str) -> MailCopy {
    MailCopy {
        box_address: box_address.into(),
        uid: uid.into(),
        trace: format!("X-For: {box_address}\r\n").into_bytes(),
    }
}

async fn seeded(db: &TestDb) -> i64 {
    let u = db.add_user("mmondor", "5ed6dfd210b419415eb054a9bee92e57").await;
    db.add_box("mmondor@example.org", u, 0, 0).await;
    db.add_box("sales@example.org", u, 0, 0).await;
    db.add_box("small@example.org", u, 100, 2).await;
    db.add_box("postmaster@example.org", u, 0, 0).await;
    db.add_alias("*@example.org", "mmondor@example.org", u).await;
    db.add_alias("sales-*@example.org", "sales@example.org", u).await;
    db.add_alias("team@example.org", "sales@example.org", u).await;
    db.add_alias("team@example.org", "mmondor@example.org", u).await;
    db.add_alias("*@*.example.net", "sales@example.org", u).await;
    db.add_alias("ghost@example.com", "mmondor@example.org", u).await;
    db.add_nofrom("127.0.0.*").await;
    db.add_nofrom("localhost").await;
    u
}

fn boxes(r: Resolution) -> Vec<String> {
    match r {
        Resolution::Boxes(b) => {
            let mut v: Vec<String> = b.into_iter().map(|b| b.address).collect();
            v.sort();
            v
        }
        other => panic!("expected boxes, got {other:?}"),
    }
}

#[tokio::test]
async fn recipient_resolution() {
    for db in TestDb::all().await {
        seeded(&db).await;
        let s = &db.store;
        let b = db.backend;
        assert_eq!(boxes(s.resolve(&addr("mmondor@example.org")).await.unwrap()), ["mmondor@example.org"], "{b:?}");
        // A box wins over any alias.
        assert_eq!(boxes(s.resolve(&addr("sales@example.org")).await.unwrap()), ["sales@example.org"], "{b:?}");
        // The most specific alias wins.
        assert_eq!(boxes(s.resolve(&addr("sales-eu@example.org")).await.unwrap()), ["sales@example.org"], "{b:?}");
        assert_eq!(boxes(s.resolve(&addr("anyone@example.org")).await.unwrap()), ["mmondor@example.org"], "{b:?}");
        // A pattern naming two boxes reaches both.
        assert_eq!(
            boxes(s.resolve(&addr("team@example.org")).await.unwrap()),
            ["mmondor@example.org", "sales@example.org"],
            "{b:?}"
        );
        assert_eq!(boxes(s.resolve(&addr("x@deep.example.net")).await.unwrap()), ["sales@example.org"], "{b:?}");
        // A domain served by an alias only: unknown user, not relaying.
        assert_eq!(s.resolve(&addr("other@example.com")).await.unwrap(), Resolution::UnknownUser, "{b:?}");
        assert_eq!(s.resolve(&addr("x@example.net")).await.unwrap(), Resolution::NotLocal, "{b:?}");
        assert_eq!(s.resolve(&addr("bob@elsewhere.test")).await.unwrap(), Resolution::NotLocal, "{b:?}");
    }
}

#[tokio::test]
async fn unknown_user_at_a_box_only_domain() {
    for db in TestDb::all().await {
        let u = db.add_user("u", "").await;
        db.add_box("a@only.test", u, 0, 0).await;
        assert_eq!(db.store.resolve(&addr("b@only.test")).await.unwrap(), Resolution::UnknownUser, "{:?}", db.backend);
        assert_eq!(db.store.resolve(&addr("b@not.only.test")).await.unwrap(), Resolution::NotLocal, "{:?}", db.backend);
    }
}

#[tokio::test]
async fn nofrom_patterns() {
    for db in TestDb::all().await {
        seeded(&db).await;
        let s = &db.store;
        assert!(s.nofrom_allows(&["127.0.0.1"]).await.unwrap());
        assert!(s.nofrom_allows(&["192.0.2.1", "localhost"]).await.unwrap());
        assert!(!s.nofrom_allows(&["192.0.2.1"]).await.unwrap());
    }
}

#[tokio::test]
async fn deliver_stores_body_once_and_updates_counters() {
    for db in TestDb::all().await {
        seeded(&db).await;
        let s = &db.store;
        let body = b"Subject: hi\r\n\r\nhello\r\n";
        let d =
            Delivery { body, copies: vec![copy("mmondor@example.org", "uid-a"), copy("sales@example.org", "uid-b")] };
        s.deliver(&d).await.unwrap();
        for (bx, uid) in [("mmondor@example.org", "uid-a"), ("sales@example.org", "uid-b")] {
            let drop = s.maildrop(bx).await.unwrap();
            assert_eq!(drop.len(), 1, "{:?}", db.backend);
            assert_eq!(drop[0].uid, uid);
            let got = s.retrieve(bx, drop[0].id).await.unwrap().unwrap().to_vec();
            let want = [format!("X-For: {bx}\r\n").as_bytes(), body].concat();
            assert_eq!(got, want);
            assert_eq!(drop[0].size as usize, want.len());
            assert_eq!(db.counters(bx).await, Usage { bytes: want.len() as i64, messages: 1 });
            assert_eq!(s.recount(bx).await.unwrap(), Usage { bytes: want.len() as i64, messages: 1 });
            // Never by id alone: another box cannot read this row.
            let other = if bx.starts_with('m') { "sales@example.org" } else { "mmondor@example.org" };
            assert_eq!(s.retrieve(other, drop[0].id).await.unwrap(), None);
        }
        assert_eq!(count(&db, "message").await, 1, "body stored once on {:?}", db.backend);
    }
}

/// On PostgreSQL, bodies are compressed with LZ4 (migration 0008), by both delivery paths
/// (one statement up to 16 KiB, a transaction above), and read back whole.
#[tokio::test]
async fn postgres_compresses_bodies_with_lz4() {
    let Some(db) = TestDb::create(common::testing::Backend::Postgres).await else { return };
    seeded(&db).await;
    let s = &db.store;
    for (n, lines) in [(0, 200), (1, 2000)] {
        let text = "All work and no play makes Jack a dull boy.\r\n".repeat(lines);
        let body = format!("Subject: {n}\r\n\r\n{text}");
        let uid = format!("uid-lz4-{n}");
        s.deliver(&Delivery { body: body.as_bytes(), copies: vec![copy("mmondor@example.org", &uid)] }).await.unwrap();
        let drop = s.maildrop("mmondor@example.org").await.unwrap();
        let id = drop.iter().find(|m| m.uid == uid).unwrap().id;
        let got = s.retrieve("mmondor@example.org", id).await.unwrap().unwrap().to_vec();
        assert!(got.ends_with(body.as_bytes()), "body {n} read back whole");
    }
    let pglz = "message WHERE pg_column_compression(message_data) IS DISTINCT FROM 'lz4'";
    assert_eq!(count(&db, pglz).await, 0, "every body is compressed with LZ4");
    assert_eq!(count(&db, "message").await, 2);
}

/// A PostgreSQL server on loopback is reached without TLS when the URL names no TLS
/// mode (`common::store::plain_first`), and with TLS when it asks for it.
#[tokio::test]
async fn postgres_on_loopback_without_tls_unless_the_url_asks() {
    let Some(db) = TestDb::create(common::testing::Backend::Postgres).await else { return };
    let tls_of = |store: common::Store| async move {
        let common::Store::Postgres(pool) = &store else { panic!("a PostgreSQL store") };
        let q = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
        let (tls,): (bool,) = sqlx::query_as(q).fetch_one(pool).await.unwrap();
        store.close().await;
        tls
    };
    let host = sqlx::postgres::PgConnectOptions::from_str(&db.url).unwrap().get_host().to_owned();
    if !common::store::plain_first(&host, &db.url) {
        assert!(!common::testing::ci(), "under CI=true the test PostgreSQL is on loopback, its URL naming no sslmode");
        return;
    }
    let common::Store::Postgres(pool) = &db.store else { panic!("a PostgreSQL store") };
    let (offered,): (String,) = sqlx::query_as("SHOW ssl").fetch_one(pool).await.unwrap();
    if offered != "on" {
        assert!(!common::testing::ci(), "under CI=true the test PostgreSQL offers TLS (ssl = on)");
        return;
    }
    let connect = |url: String| async move {
        common::Store::connect(&common::config::DatabaseConfig::from_url(url)).await.unwrap()
    };
    assert!(!tls_of(connect(db.url.clone()).await).await, "no TLS on loopback by default");
    let sep = if db.url.contains('?') { '&' } else { '?' };
    assert!(tls_of(connect(format!("{}{sep}sslmode=require", db.url)).await).await, "TLS when the URL asks");
}

/// A run read in one query (POP3 read-ahead): only the box's own messages, in order,
/// none larger than asked, no more than asked.
#[tokio::test]
async fn retrieve_run_reads_a_bounded_run_of_one_box() {
    for db in TestDb::all().await {
        seeded(&db).await;
        let s = &db.store;
        let b = db.backend;
        let bodies: Vec<Vec<u8>> =
            (0..5).map(|i| format!("Subject: {i}\r\n\r\n{}\r\n", "x".repeat(i * 100)).into()).collect();
        for (i, body) in bodies.iter().enumerate() {
            s.deliver(&Delivery { body, copies: vec![copy("mmondor@example.org", &format!("m{i}"))] }).await.unwrap();
            // Another box's message between each: never part of the run.
            s.deliver(&Delivery { body, copies: vec![copy("sales@example.org", &format!("s{i}"))] }).await.unwrap();
        }
        let drop = s.maildrop("mmondor@example.org").await.unwrap();
        let whole = |i: usize| [b"X-For: mmondor@example.org\r\n".as_slice(), &bodies[i]].concat();
        let run = |first: usize, last: usize, max_size: i64, messages: i64| common::store::Run {
            first: drop[first].id,
            last: drop[last].id,
            max_size,
            messages,
        };
        let got = s.retrieve_run("mmondor@example.org", &run(0, 4, i64::MAX, 10)).await.unwrap();
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), drop.iter().map(|m| m.id).collect::<Vec<_>>(), "{b:?}");
        for (i, (_, r)) in got.iter().enumerate() {
            assert_eq!(r.to_vec(), whole(i), "{b:?}");
        }
        // At most 3 messages, from the second.
        let got = s.retrieve_run("mmondor@example.org", &run(1, 4, i64::MAX, 3)).await.unwrap();
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [drop[1].id, drop[2].id, drop[3].id], "{b:?}");
        // None larger than the third's size.
        let got = s.retrieve_run("mmondor@example.org", &run(0, 4, drop[2].size, 10)).await.unwrap();
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [drop[0].id, drop[1].id, drop[2].id], "{b:?}");
        // Another box's name reads nothing of this one.
        assert!(s.retrieve_run("postmaster@example.org", &run(0, 4, i64::MAX, 10)).await.unwrap().is_empty());
    }
}

/// `SELECT COUNT(*) FROM {from}` (a table, optionally with a WHERE clause).
async fn count(db: &TestDb, from: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {from}"));
    let q = sqlx::query_as::<_, (i64,)>;
    let (n,) = match &db.store {
        common::Store::Postgres(p) => q(sql).fetch_one(p).await.unwrap(),
        common::Store::MySql(p) => sqlx::query_as::<_, (i64,)>(sql).fetch_one(p).await.unwrap(),
        common::Store::Sqlite(p) => sqlx::query_as::<_, (i64,)>(sql).fetch_one(p).await.unwrap(),
    };
    n
}

#[tokio::test]
async fn full_box_stores_nothing_anywhere() {
    for db in TestDb::all().await {
        seeded(&db).await;
        let s = &db.store;
        let one = |uid: &str| Delivery { body: b"x\r\n", copies: vec![copy("small@example.org", uid)] };
        s.deliver(&one("s1")).await.unwrap();
        s.deliver(&one("s2")).await.unwrap();
        let both = Delivery {
            body: b"x\r\n",
            copies: vec![copy("mmondor@example.org", "m1"), copy("small@example.org", "s3")],
        };
        match s.deliver(&both).await {
            Err(DeliverError::NoRoom(b)) => assert_eq!(b, "small@example.org"),
            other => panic!("{:?}: {other:?}", db.backend),
        }
        assert_eq!(s.maildrop("mmondor@example.org").await.unwrap().len(), 0, "{:?}", db.backend);
        assert_eq!(db.counters("mmondor@example.org").await, Usage::default());
        assert_eq!(db.counters("small@example.org").await.messages, 2);
        assert_eq!(count(&db, "message").await, 2, "no orphan body on {:?}", db.backend);
    }
}

#[tokio::test]
async fn size_limit_allows_overrun_by_one_message_only() {
    for db in TestDb::all().await {
        seeded(&db).await;
        let s = &db.store;
        // 40-byte body + 26-byte trace = 66 bytes a copy; the limit is 100 bytes.
        let big = vec![b'a'; 40];
        let d = |uid: &str| Delivery { body: &big, copies: vec![copy("small@example.org", uid)] };
        s.deliver(&d("b1")).await.unwrap(); // 0 -> 66 bytes
        s.deliver(&d("b2")).await.unwrap(); // 66 is under 100: accepted, 132 now
        assert!(matches!(s.deliver(&d("b3")).await, Err(DeliverError::NoRoom(_))), "{:?}", db.backend);
        assert_eq!(count(&db, "message").await, 2, "no body of the refused message on {:?}", db.backend);
        assert_eq!(db.counters("small@example.org").await, Usage { bytes: 132, messages: 2 }, "{:?}", db.backend);
    }
}

/// A body over 256 KiB is stored alone, in a transaction of its own, not taken into a
/// group commit: the same limits hold on that path (on SQLite its one multi-statement
/// call), and a full box keeps neither body nor copy.
#[tokio::test]
async fn a_large_message_alone_meets_the_same_limits() {
    for db in TestDb::all().await {
        seeded(&db).await;
        let s = &db.store;
        let large = vec![b'l'; 300 * 1024];
        let d = |uid: &str| Delivery { body: &large, copies: vec![copy("small@example.org", uid)] };
        s.deliver(&d("l1")).await.unwrap(); // the box was empty: accepted past its 100 bytes
        assert!(matches!(s.deliver(&d("l2")).await, Err(DeliverError::NoRoom(_))), "{:?}", db.backend);
        assert_eq!(count(&db, "message").await, 1, "no body of the refused message on {:?}", db.backend);
        let stored = Usage { bytes: 300 * 1024 + 26, messages: 1 };
        assert_eq!(db.counters("small@example.org").await, stored, "{:?}", db.backend);
    }
}

#[tokio::test]
async fn a_failed_insert_rolls_everything_back() {
    for db in TestDb::all().await {
        seeded(&db).await;
        let s = &db.store;
        s.deliver(&Delivery { body: b"x", copies: vec![copy("mmondor@example.org", "dup")] }).await.unwrap();
        let r = s.deliver(&Delivery { body: b"y", copies: vec![copy("sales@example.org", "dup")] }).await;
        assert!(matches!(r, Err(DeliverError::Store(_))), "{:?}", db.backend);
        assert_eq!(db.counters("sales@example.org").await, Usage::default(), "{:?}", db.backend);
        assert_eq!(count(&db, "message").await, 1, "{:?}", db.backend);
    }
}

#[tokio::test]
async fn user_passwords() {
    for db in TestDb::all().await {
        seeded(&db).await;
        let s = &db.store;
        let common::store::User { id, passwd: pw } = s.user_password("mmondor").await.unwrap().unwrap();
        assert!(id > 0);
        assert_eq!(pw, "5ed6dfd210b419415eb054a9bee92e57");
        s.set_user_password("mmondor", "$argon2id$new").await.unwrap();
        assert_eq!(s.user_password("mmondor").await.unwrap().unwrap().passwd, "$argon2id$new");
        assert!(matches!(s.set_user_password("nobody", "x").await, Err(common::StoreError::NotFound)));
        assert_eq!(s.user_password("nobody").await.unwrap(), None);
    }
}

#[tokio::test]
async fn migrations_are_idempotent_and_checked() {
    for db in TestDb::all().await {
        common::store::migrate::migrate(&db.store).await.unwrap();
        common::store::migrate::check_current(&db.store).await.unwrap();
    }
}

#[tokio::test]
async fn migrate_false_refuses_a_schema_that_is_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config::DatabaseConfig::from_url(format!("sqlite://{}/fresh.db", dir.path().display()));
    cfg.migrate = false;
    match common::Store::prepare(&cfg).await {
        Err(common::StoreError::SchemaBehind(1)) => {}
        other => panic!("expected SchemaBehind(1), got {other:?}"),
    }
    cfg.migrate = true;
    common::Store::prepare(&cfg).await.unwrap().close().await;
    cfg.migrate = false;
    common::Store::prepare(&cfg).await.unwrap();
}

#[tokio::test]
async fn box_owner_and_rehash() {
    for db in TestDb::all().await {
        let u = seeded(&db).await;
        let s = &db.store;
        let o = s.box_owner("sales@example.org").await.unwrap().unwrap();
        assert_eq!(
            (o.user_id, o.user_name.as_str(), o.passwd.as_str()),
            (u, "mmondor", "5ed6dfd210b419415eb054a9bee92e57")
        );
        assert_eq!(s.box_owner("nobody@example.org").await.unwrap(), None);
        assert!(!s.replace_password(u, "stale", "$argon2id$x").await.unwrap(), "{:?}", db.backend);
        assert!(s.replace_password(u, "5ed6dfd210b419415eb054a9bee92e57", "$argon2id$x").await.unwrap());
        assert_eq!(s.box_owner("sales@example.org").await.unwrap().unwrap().passwd, "$argon2id$x");
    }
}

#[tokio::test]
async fn maildrop_locks_are_exclusive_leases() {
    for db in TestDb::all().await {
        seeded(&db).await;
        let s = &db.store;
        let b = db.backend;
        assert!(s.lock_box("mmondor@example.org", "one", 60).await.unwrap(), "{b:?}");
        assert!(!s.lock_box("mmondor@example.org", "two", 60).await.unwrap(), "{b:?}");
        assert!(s.lock_box("sales@example.org", "two", 60).await.unwrap(), "other boxes are free");
        assert!(s.refresh_lock("mmondor@example.org", "one", 60).await.unwrap());
        assert!(!s.refresh_lock("mmondor@example.org", "two", 60).await.unwrap());
        s.unlock_box("mmondor@example.org", "two").await.unwrap(); // not the owner: no effect
        assert!(!s.lock_box("mmondor@example.org", "three", 60).await.unwrap());
        s.unlock_box("mmondor@example.org", "one").await.unwrap();
        assert!(s.lock_box("mmondor@example.org", "three", 60).await.unwrap(), "{b:?}");
        // An expired lease is taken over, and its old holder learns it lost it.
        db.sql("UPDATE pop3_lock SET lock_expires = 1 WHERE lock_box = 'mmondor@example.org'").await;
        assert!(s.lock_box("mmondor@example.org", "four", 60).await.unwrap(), "{b:?}");
        assert!(!s.refresh_lock("mmondor@example.org", "three", 60).await.unwrap());
    }
}

#[tokio::test]
async fn deletions_settle_counters_and_free_bodies_last() {
    for db in TestDb::all().await {
        seeded(&db).await;
        let s = &db.store;
        let shared = Delivery {
            body: b"shared body\r\n",
            copies: vec![copy("mmondor@example.org", "m1"), copy("sales@example.org", "s1")],
        };
        s.deliver(&shared).await.unwrap();
        s.deliver(&Delivery { body: b"second\r\n", copies: vec![copy("mmondor@example.org", "m2")] }).await.unwrap();
        let drop = s.maildrop("mmondor@example.org").await.unwrap();
        assert_eq!(drop.len(), 2);
        let ids: Vec<i64> = drop.iter().map(|m| m.id).collect();
        // An id of another box is ignored, never deleted.
        let sales_id = s.maildrop("sales@example.org").await.unwrap()[0].id;
        assert!(s.lock_box("mmondor@example.org", "me", 60).await.unwrap());
        let n = s.commit_deletions("mmondor@example.org", "me", &[ids[0], ids[1], sales_id, 999_999]).await.unwrap();
        assert_eq!(n, Update::Deleted(2), "{:?}", db.backend);
        assert!(s.lock_box("mmondor@example.org", "next", 60).await.unwrap(), "released with the deletions");
        assert_eq!(db.counters("mmondor@example.org").await, Usage::default());
        assert_eq!(s.recount("mmondor@example.org").await.unwrap(), Usage::default());
        // The shared body stays for the sales box; the other body is gone.
        assert_eq!(count(&db, "message").await, 1, "{:?}", db.backend);
        let got = s.retrieve("sales@example.org", sales_id).await.unwrap().unwrap();
        assert_eq!(got.body, b"shared body\r\n");
        assert!(s.lock_box("sales@example.org", "me", 60).await.unwrap());
        assert_eq!(s.commit_deletions("sales@example.org", "me", &[sales_id]).await.unwrap(), Update::Deleted(1));
        assert_eq!(count(&db, "message").await, 0, "{:?}", db.backend);
        // box_out records the retrieval.
        assert_eq!(count(&db, "box WHERE box_out IS NOT NULL AND box_address = 'sales@example.org'").await, 1);
    }
}

/// A QUIT deleting more messages than one statement names (the store deletes them in
/// chunks): exactly the named copies of this box go, the counters follow, bodies shared
/// with a copy that stays are kept, the others freed.
#[tokio::test]
async fn many_deletions_in_chunks() {
    for db in TestDb::all().await {
        seeded(&db).await;
        let s = &db.store;
        let b = db.backend;
        // 200 messages: the deletions named below span two statements of 128 ids.
        for i in 0..200 {
            let mut copies = vec![copy("mmondor@example.org", &format!("m{i}"))];
            if i % 10 == 0 {
                copies.push(copy("sales@example.org", &format!("s{i}")));
            }
            let body = format!("body {i}\r\n").into_bytes();
            s.deliver(&Delivery { body: &body, copies }).await.unwrap();
        }
        let drop = s.maildrop("mmondor@example.org").await.unwrap();
        // All but every third; plus another box's ids and an unknown one, never deleted.
        let mut ids: Vec<i64> = drop.iter().enumerate().filter(|(i, _)| i % 3 != 0).map(|(_, m)| m.id).collect();
        let named = ids.len();
        ids.extend(s.maildrop("sales@example.org").await.unwrap().iter().map(|m| m.id));
        ids.push(9_999_999);
        assert!(s.lock_box("mmondor@example.org", "me", 60).await.unwrap());
        assert_eq!(
            s.commit_deletions("mmondor@example.org", "me", &ids).await.unwrap(),
            Update::Deleted(named as u64),
            "{b:?}"
        );
        let left = s.maildrop("mmondor@example.org").await.unwrap();
        let kept: Vec<i64> = drop.iter().enumerate().filter(|(i, _)| i % 3 == 0).map(|(_, m)| m.id).collect();
        assert_eq!(left.iter().map(|m| m.id).collect::<Vec<_>>(), kept, "{b:?}");
        let kept_bytes: i64 = left.iter().map(|m| m.size).sum();
        assert_eq!(
            db.counters("mmondor@example.org").await,
            Usage { bytes: kept_bytes, messages: kept.len() as i64 },
            "{b:?}"
        );
        assert_eq!(s.maildrop("sales@example.org").await.unwrap().len(), 20, "{b:?}");
        // A body stays while any copy refers to it: the 67 kept here, and of the 133
        // deleted here, the 13 that sales also holds (multiples of 10 but not of 30).
        assert_eq!(count(&db, "message").await, 67 + 13, "{b:?}");
    }
}

/// mmadmin's box deletion frees the bodies only that box held (in chunks, as the QUIT
/// does) and keeps a body another box still refers to.
#[tokio::test]
async fn deleting_a_box_frees_only_its_own_bodies() {
    for db in TestDb::all().await {
        seeded(&db).await;
        let s = &db.store;
        let b = db.backend;
        let shared = Delivery {
            body: b"shared\r\n",
            copies: vec![copy("mmondor@example.org", "m-shared"), copy("sales@example.org", "s-shared")],
        };
        s.deliver(&shared).await.unwrap();
        // More than one statement names (128).
        for i in 0..140 {
            let body = format!("own {i}\r\n").into_bytes();
            s.deliver(&Delivery { body: &body, copies: vec![copy("mmondor@example.org", &format!("m{i}"))] })
                .await
                .unwrap();
        }
        assert_eq!(count(&db, "message").await, 141, "{b:?}");
        s.admin_delete_box("mmondor@example.org").await.unwrap();
        assert_eq!(count(&db, "message").await, 1, "{b:?}");
        let sales = s.maildrop("sales@example.org").await.unwrap();
        assert_eq!(s.retrieve("sales@example.org", sales[0].id).await.unwrap().unwrap().body, b"shared\r\n");
    }
}

/// RFC 1939 §6 under a lease: deletions happen only while the lock is still the
/// session's and unexpired; otherwise nothing is deleted and another holder's lock stays.
#[tokio::test]
async fn deletions_only_under_the_sessions_own_live_lease() {
    for db in TestDb::all().await {
        seeded(&db).await;
        let s = &db.store;
        let b = db.backend;
        for uid in ["m1", "m2"] {
            s.deliver(&Delivery { body: b"x\r\n", copies: vec![copy("mmondor@example.org", uid)] }).await.unwrap();
        }
        let ids: Vec<i64> = s.maildrop("mmondor@example.org").await.unwrap().iter().map(|m| m.id).collect();
        // Never locked.
        assert_eq!(s.commit_deletions("mmondor@example.org", "me", &ids).await.unwrap(), Update::LockLost, "{b:?}");
        // Expired.
        assert!(s.lock_box("mmondor@example.org", "me", 60).await.unwrap());
        db.sql("UPDATE pop3_lock SET lock_expires = 1 WHERE lock_box = 'mmondor@example.org'").await;
        assert_eq!(s.commit_deletions("mmondor@example.org", "me", &ids).await.unwrap(), Update::LockLost, "{b:?}");
        // Taken over.
        assert!(s.lock_box("mmondor@example.org", "other", 60).await.unwrap());
        assert_eq!(s.commit_deletions("mmondor@example.org", "me", &ids).await.unwrap(), Update::LockLost, "{b:?}");
        assert_eq!(s.recount("mmondor@example.org").await.unwrap().messages, 2, "{b:?}: nothing deleted");
        assert!(!s.lock_box("mmondor@example.org", "third", 60).await.unwrap(), "{b:?}: the holder's lock stays");
        assert_eq!(s.commit_deletions("mmondor@example.org", "other", &ids).await.unwrap(), Update::Deleted(2));
    }
}

/// QUITs arriving at once (on SQLite they are committed together, in one transaction):
/// each gets the answer it would have got alone. A lost lease among them changes nothing
/// for its box and does not hold the others back; a body shared by all the boxes stays
/// while one copy of it is left.
#[tokio::test]
async fn quits_at_once_each_keep_their_own_answer() {
    for db in TestDb::all().await {
        let u = seeded(&db).await;
        let s = &db.store;
        let b = db.backend;
        let boxes: Vec<String> = (0..6).map(|i| format!("q{i}@example.org")).collect();
        for a in &boxes {
            db.add_box(a, u, 0, 0).await;
            for n in 0..3 {
                let body = format!("{a} {n}\r\n").into_bytes();
                s.deliver(&Delivery { body: &body, copies: vec![copy(a, &format!("{a}-{n}"))] }).await.unwrap();
            }
        }
        let copies = boxes.iter().map(|a| copy(a, &format!("{a}-shared"))).collect();
        s.deliver(&Delivery { body: b"shared\r\n", copies }).await.unwrap();
        // The last box's lease is another session's by the time its QUIT comes.
        for (i, a) in boxes.iter().enumerate() {
            let owner = if i == 5 { "other".to_owned() } else { format!("me{i}") };
            assert!(s.lock_box(a, &owner, 60).await.unwrap());
        }
        let mut quits = Vec::new();
        for (i, a) in boxes.iter().enumerate() {
            let ids: Vec<i64> = s.maildrop(a).await.unwrap().iter().map(|m| m.id).collect();
            let (s, a) = (s.clone(), a.clone());
            quits.push(tokio::spawn(async move { s.commit_deletions(&a, &format!("me{i}"), &ids).await }));
        }
        for (i, q) in quits.into_iter().enumerate() {
            let got = q.await.unwrap().unwrap();
            let want = if i == 5 { Update::LockLost } else { Update::Deleted(4) };
            assert_eq!(got, want, "{b:?}: QUIT of {}", boxes[i]);
        }
        for a in &boxes[..5] {
            assert_eq!(db.counters(a).await, Usage::default(), "{b:?}: {a}");
            assert!(s.lock_box(a, "next", 60).await.unwrap(), "{b:?}: {a} released with its deletions");
        }
        assert_eq!(s.recount(&boxes[5]).await.unwrap().messages, 4, "{b:?}: nothing deleted");
        assert!(!s.lock_box(&boxes[5], "third", 60).await.unwrap(), "{b:?}: the holder's lock stays");
        // The last box's three bodies and the shared one.
        assert_eq!(count(&db, "message").await, 4, "{b:?}");
        let shared = s.maildrop(&boxes[5]).await.unwrap()[3].id;
        assert_eq!(s.retrieve(&boxes[5], shared).await.unwrap().unwrap().body, b"shared\r\n");
    }
}

#[tokio::test]
async fn counters_never_go_negative() {
    for db in TestDb::all().await {
        seeded(&db).await;
        let s = &db.store;
        s.deliver(&Delivery { body: b"x\r\n", copies: vec![copy("mmondor@example.org", "m1")] }).await.unwrap();
        db.sql("UPDATE box SET box_size = 1, box_mails = 0 WHERE box_address = 'mmondor@example.org'").await;
        let id = s.maildrop("mmondor@example.org").await.unwrap()[0].id;
        assert!(s.lock_box("mmondor@example.org", "me", 60).await.unwrap());
        s.commit_deletions("mmondor@example.org", "me", &[id]).await.unwrap();
        assert_eq!(db.counters("mmondor@example.org").await, Usage::default(), "{:?}", db.backend);
    }
}

/// Daemons starting together on a fresh database: every one migrates without error
/// (on MariaDB this needs our own lock: sqlx's is not taken there).
#[tokio::test]
async fn concurrent_migrations_on_a_fresh_database() {
    for backend in common::testing::Backend::ALL {
        let Some(db) = TestDb::create_unmigrated(backend).await else { continue };
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let url = db.url.clone();
            tasks.push(tokio::spawn(async move {
                let store = common::Store::connect(&common::config::DatabaseConfig::from_url(url)).await.unwrap();
                let r = common::store::migrate::migrate(&store).await;
                store.close().await;
                r
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        }
        common::store::migrate::check_current(&db.store).await.unwrap();
    }
}

/// A migrator that stopped half-way through a MySQL migration (DDL commits as it goes,
/// so its `_sqlx_migrations` row stays `success = FALSE` with part of the work done) is
/// finished by the next daemon that starts, instead of refusing to start; and a
/// migration lock left by a migrator that died is taken over once its lease ends.
#[tokio::test]
async fn mysql_migration_left_half_done_is_finished() {
    let Some(db) = TestDb::create(common::testing::Backend::MySql).await else { return };
    db.sql("UPDATE _sqlx_migrations SET success = FALSE WHERE version = 4").await;
    db.sql("DROP TRIGGER box_address_lowercase_update").await;
    // A dead migrator's lease, expired.
    db.sql("INSERT INTO _mmmail_migration_lock (lock_id, lock_owner, lock_expires) VALUES (1, 'dead', 1)").await;
    common::store::migrate::migrate(&db.store).await.expect("the half-done migration is finished");
    common::store::migrate::check_current(&db.store).await.unwrap();
    let common::Store::MySql(p) = &db.store else { unreachable!() };
    let (triggers,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM information_schema.triggers WHERE trigger_schema = DATABASE() \
         AND trigger_name LIKE 'box_address_lowercase_%'",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(triggers, 2, "the dropped trigger is made again");
    let (locks,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _mmmail_migration_lock").fetch_one(p).await.unwrap();
    assert_eq!(locks, 0, "the lock is released");
}

/// Every MySQL connection of a store has the session the SQL is written for (set up by
/// the store, not by sqlx, so that a Galera conflict during it is asked again on the
/// same connection): timestamps in UTC, standard `||`, no engine substitution, UTF-8 of
/// four octets; on the first connection and on one the pool opens beside it.
#[tokio::test]
async fn mysql_connections_get_the_session_settings() {
    let Some(db) = TestDb::create(common::testing::Backend::MySql).await else { return };
    let common::Store::MySql(p) = &db.store else { unreachable!() };
    let (mut first, mut second) = (p.acquire().await.unwrap(), p.acquire().await.unwrap());
    for conn in [&mut *first, &mut *second] {
        let (zone, mode, charset, joined): (String, String, String, String) = sqlx::query_as(
            "SELECT @@session.time_zone, @@session.sql_mode, @@session.character_set_client, 'a' || 'b'",
        )
        .fetch_one(conn)
        .await
        .unwrap();
        assert_eq!(zone, "+00:00");
        assert!(mode.contains("PIPES_AS_CONCAT") && mode.contains("NO_ENGINE_SUBSTITUTION"), "{mode}");
        assert_eq!(charset, "utf8mb4");
        assert_eq!(joined, "ab");
    }
}

/// Every SQLite connection keeps a page cache of 512 KiB, not SQLite's 2000 KiB: a
/// daemon's pool would otherwise hold 2 MB per connection. A transaction spills its
/// dirty pages to the WAL only past 1500 of them (about 6 MiB), not past the cache's
/// bound.
#[tokio::test]
async fn sqlite_connections_keep_a_small_page_cache() {
    let db = TestDb::create(common::testing::Backend::Sqlite).await.expect("SQLite");
    let common::Store::Sqlite(p) = &db.store else { unreachable!() };
    let (mut first, mut second) = (p.acquire().await.unwrap(), p.acquire().await.unwrap());
    for conn in [&mut *first, &mut *second] {
        let (pages,): (i64,) = sqlx::query_as("PRAGMA cache_size").fetch_one(&mut *conn).await.unwrap();
        assert_eq!(pages, -512);
        // A group commit of up to 4 MiB of bodies goes to the WAL once, at its commit.
        let (spill,): (i64,) = sqlx::query_as("PRAGMA cache_spill").fetch_one(conn).await.unwrap();
        assert_eq!(spill, 1500);
    }
}

/// A commit on a SQLite file wakes the WAL checkpointer, not a checkpoint of its own
/// (issue 16): the daemons' connections leave the automatic checkpoint off, and a
/// message delivered reaches the database file itself soon after, with no later write.
#[tokio::test]
async fn sqlite_commits_are_checkpointed_off_the_writers_path() {
    let db = TestDb::create(common::testing::Backend::Sqlite).await.expect("SQLite");
    let common::Store::Sqlite(p) = &db.store else { unreachable!() };
    let (off,): (i64,) = sqlx::query_as("PRAGMA wal_autocheckpoint").fetch_one(p).await.unwrap();
    assert_eq!(off, 0);
    seeded(&db).await;
    let marker = format!("checkpointed-{}", std::process::id());
    let body = format!("Subject: x\r\n\r\n{marker}\r\n").into_bytes();
    db.store.deliver(&Delivery { body: &body, copies: vec![copy("mmondor@example.org", "m1")] }).await.unwrap();
    let file = p.connect_options().get_filename().to_path_buf();
    let wal = std::fs::read(format!("{}-wal", file.display())).unwrap();
    assert!(wal.windows(marker.len()).any(|w| w == marker.as_bytes()), "committed to the WAL");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let main = std::fs::read(&file).unwrap();
        if main.windows(marker.len()).any(|w| w == marker.as_bytes()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the delivery never reached the database file");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The WAL stays bounded under a steady stream of commits (issue 16): with SQLite's
/// automatic checkpoint off, the checkpointer finishes a checkpoint under the writer turn
/// once the WAL passes its limit (16 MiB here, where the disk has room), so that the WAL
/// starts over, and the file is cut back when it does. 48 MiB of deliveries one after
/// another; without that step the WAL would hold all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_stays_bounded_under_steady_writes() {
    let db = TestDb::create(common::testing::Backend::Sqlite).await.expect("SQLite");
    let common::Store::Sqlite(p) = &db.store else { unreachable!() };
    seeded(&db).await;
    let wal = format!("{}-wal", p.connect_options().get_filename().display());
    let body = [b"Subject: x\r\n\r\n".as_slice(), &vec![b'x'; 64 * 1024]].concat();
    let mut largest = 0;
    for i in 0..768 {
        let id = format!("w{i}");
        db.store.deliver(&Delivery { body: &body, copies: vec![copy("mmondor@example.org", &id)] }).await.unwrap();
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    assert!(largest > 0, "the deliveries went to a WAL");
    assert!(largest < 32 << 20, "the WAL grew to {largest} bytes");
}

/// design.md "Schema": box addresses are lowercase. A mixed-case box would receive no
/// mail and could not log in, so every backend refuses one when it is inserted or
/// renamed (migration 0004); one inserted before that migration is reported.
#[tokio::test]
async fn mixed_case_boxes_are_refused_or_reported() {
    use common::testing::Backend;
    for db in TestDb::all().await {
        let u = seeded(&db).await;
        let now = db.backend.now();
        let insert = format!("INSERT INTO box VALUES ('Bob@Corp.Test', {u}, 0, 0, 0, 0, {now}, {now}, {now})");
        let refused = db.store.execute_admin_sql(&insert).await;
        assert!(refused.is_err(), "{:?} accepted a mixed-case box", db.backend);
        let rename = "UPDATE box SET box_address = 'Small@example.org' WHERE box_address = 'small@example.org'";
        assert!(db.store.execute_admin_sql(rename).await.is_err(), "{:?} renamed a box to mixed case", db.backend);
        db.add_box("bob@corp.test", u, 0, 0).await;
        assert!(db.store.mixed_case_boxes().await.unwrap().is_empty());

        // A row from before migration 0004.
        let lift = match db.backend {
            Backend::Postgres => "ALTER TABLE box DROP CONSTRAINT box_address_lowercase",
            Backend::MySql | Backend::Sqlite => "DROP TRIGGER box_address_lowercase_insert",
        };
        db.sql(lift).await;
        db.sql(&insert).await;
        assert_eq!(db.store.mixed_case_boxes().await.unwrap(), ["Bob@Corp.Test"], "{:?}", db.backend);
    }
}

/// Bans (issue 13): a ban is extended by a later one, never shortened; one that is
/// over is gone from the list and from the table; a lifted one is gone at once.
#[tokio::test]
async fn bans_extend_expire_and_lift() {
    for db in TestDb::all().await {
        let s = &db.store;
        let b = db.backend;
        let now = common::store::unix_now();
        s.ban("192.0.2.1", now + 600, "login").await.unwrap();
        s.ban("192.0.2.1", now + 1200, "recipients").await.unwrap();
        s.ban("192.0.2.1", now + 60, "login").await.unwrap();
        s.ban("2001:db8::", now + 600, "login").await.unwrap();
        let mut bans = s.active_bans().await.unwrap();
        bans.sort();
        assert_eq!(bans, vec![("192.0.2.1".into(), now + 1200), ("2001:db8::".into(), now + 600)], "{b:?}");
        // Over: not listed, and deleted.
        db.sql("UPDATE ban SET ban_until = 1 WHERE ban_address = '2001:db8::'").await;
        assert_eq!(s.active_bans().await.unwrap(), vec![("192.0.2.1".into(), now + 1200)], "{b:?}");
        assert!(!s.delete_ban("2001:db8::").await.unwrap(), "{b:?}: the expired row was deleted");
        assert!(s.delete_ban("192.0.2.1").await.unwrap());
        assert!(s.active_bans().await.unwrap().is_empty(), "{b:?}");
    }
}

/// Greylisting (issue 14) on every backend: a new triplet waits the delay, a retry after
/// it passes and stays passed, a retry after `expire` starts again, two stores on one
/// database share the rows, and the purge drops old rows.
#[tokio::test]
async fn greylisting_waits_passes_expires_and_purges() {
    use common::store::Greylisting;
    let rule = Greylisting { delay: 300, expire: 3600, keep: 86_400 };
    for db in TestDb::all().await {
        let s = &db.store;
        let b = db.backend;
        assert_eq!(s.greylist("k1", "192.0.2.0/24", rule).await.unwrap(), 300, "{b:?}: new");
        let left = s.greylist("k1", "192.0.2.0/24", rule).await.unwrap();
        assert!((299..=300).contains(&left), "{b:?}: still waiting, {left}");
        // As if first seen 301 s ago: passes, and stays passed.
        let ago = common::store::unix_now() - 301;
        db.sql(&format!("UPDATE greylist SET grey_first = {ago} WHERE grey_key = 'k1'")).await;
        assert_eq!(s.greylist("k1", "192.0.2.0/24", rule).await.unwrap(), 0, "{b:?}: retried after the delay");
        assert_eq!(s.greylist("k1", "192.0.2.0/24", rule).await.unwrap(), 0, "{b:?}: passed");
        // A triplet whose retry came after `expire` starts again.
        assert_eq!(s.greylist("k2", "192.0.2.0/24", rule).await.unwrap(), 300, "{b:?}");
        let long_ago = common::store::unix_now() - 4000;
        db.sql(&format!("UPDATE greylist SET grey_first = {long_ago} WHERE grey_key = 'k2'")).await;
        assert_eq!(s.greylist("k2", "192.0.2.0/24", rule).await.unwrap(), 300, "{b:?}: expired");
        // Another store on the same database sees the same rows.
        let other = common::Store::connect(&common::config::DatabaseConfig::from_url(db.url.clone())).await.unwrap();
        assert_eq!(other.greylist("k1", "192.0.2.0/24", rule).await.unwrap(), 0, "{b:?}: shared");
        // A passed triplet unseen for longer than `keep` is purged.
        db.sql(&format!("UPDATE greylist SET grey_last = {long_ago} WHERE grey_key = 'k1'")).await;
        assert_eq!(s.greylist_purge(3600).await.unwrap(), 1, "{b:?}");
        assert_eq!(s.greylist("k1", "192.0.2.0/24", rule).await.unwrap(), 300, "{b:?}: forgotten");
    }
}

/// Many deliveries at once (on SQLite they are stored together, several to a
/// transaction): each gets the answer it would have had alone. A box with room for five
/// takes exactly five; a delivery with two copies whose second box (in the order boxes
/// are taken) is full stores neither; the counters match the copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_at_once_each_answered_as_alone() {
    for db in TestDb::all().await {
        let b = db.backend;
        let u = db.add_user("many", "x").await;
        db.add_box("big@example.org", u, 0, 0).await;
        db.add_box("small@example.org", u, 0, 5).await;
        let mut tasks = tokio::task::JoinSet::new();
        // More than a batch holds (64), so that some wait for a second turn.
        for i in 0..150 {
            let store = db.store.clone();
            let boxes: Vec<&str> = match i % 3 {
                0 => vec!["big@example.org"],
                1 => vec!["small@example.org"],
                _ => vec!["big@example.org", "small@example.org"],
            };
            let copies: Vec<MailCopy> = boxes.iter().map(|a| copy(a, &format!("{i}-{a}"))).collect();
            tasks.spawn(async move {
                let body = format!("Subject: {i}\r\n\r\n{}\r\n", "x".repeat(i * 20)).into_bytes();
                (i, store.deliver(&Delivery { body: &body, copies }).await)
            });
        }
        let (mut stored_in_five, mut stored_open) = (0, 0);
        while let Some(done) = tasks.join_next().await {
            let (i, r) = done.unwrap();
            match (i % 3, r) {
                (0, r) => {
                    r.unwrap();
                    stored_open += 1;
                }
                (_, Ok(())) => {
                    stored_in_five += 1;
                    if i % 3 == 2 {
                        stored_open += 1;
                    }
                }
                (_, Err(DeliverError::NoRoom(a))) => assert_eq!(a, "small@example.org", "{b:?}"),
                (_, Err(e)) => panic!("{b:?}: delivery {i}: {e}"),
            }
        }
        assert_eq!(stored_in_five, 5, "{b:?}");
        for (address, copies) in [("small@example.org", 5), ("big@example.org", stored_open)] {
            let listed = db.store.maildrop(address).await.unwrap();
            assert_eq!(listed.len(), copies, "{b:?} {address}");
            assert_eq!(db.store.recount(address).await.unwrap(), db.counters(address).await, "{b:?} {address}");
        }
        // A refused two-copy delivery left nothing in the open box either.
        let open: Vec<String> =
            db.store.maildrop("big@example.org").await.unwrap().into_iter().map(|m| m.uid).collect();
        let five: Vec<String> =
            db.store.maildrop("small@example.org").await.unwrap().into_iter().map(|m| m.uid).collect();
        for uid in open.iter().filter(|u| u.starts_with(|c: char| c.is_ascii_digit())) {
            let i: usize = uid.split('-').next().unwrap().parse().unwrap();
            if i % 3 == 2 {
                assert!(five.contains(&format!("{i}-small@example.org")), "{b:?}: {uid} stored without its other copy");
            }
        }
        // Every copy holds its own delivery's body, trace and size (several deliveries
        // share one statement on SQLite).
        for address in ["big@example.org", "small@example.org"] {
            for m in db.store.maildrop(address).await.unwrap() {
                let i: usize = m.uid.split('-').next().unwrap().parse().unwrap();
                let got = db.store.retrieve(address, m.id).await.unwrap().unwrap();
                let body = format!("Subject: {i}\r\n\r\n{}\r\n", "x".repeat(i * 20)).into_bytes();
                assert_eq!(got.body, body, "{b:?}: {}", m.uid);
                assert_eq!(got.trace, format!("X-For: {address}\r\n").into_bytes(), "{b:?}: {}", m.uid);
                assert_eq!(m.size, (body.len() + got.trace.len()) as i64, "{b:?}: {}", m.uid);
            }
        }
    }
}
