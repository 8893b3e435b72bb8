//! The suite on a three-node MariaDB Galera cluster (issue 17): one mmsmtpd, mmpop3d
//! (and in the first test mmtmtpd) per node, every daemon on its own node. Needs root
//! (the nodes run as user `mysql` from private directories) and Debian's `galera-4`,
//! `rsync`; under `CI=true` both must be there.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::store::{Delivery, MailCopy, Store};
use common::testing::Daemon;
use faults::clients::{self, SMTP_MARKER, Stop, TmtpAccount};
use faults::galera::{Galera, NodeDaemons, PASSWORD, fixtures, pool, reachable_dir, start_all, store};
use faults::ledger::{self, Ledger, Reply, Row};
use faults::scenario::add_tmtp_user;
use tokio::io::BufReader;
use tokio::net::TcpStream;

/// Root, and Galera installed; otherwise a note (a failure under `CI=true`).
fn runnable(test: &str) -> bool {
    if !faults::root_or_skip(test) {
        return false;
    }
    if Galera::available() {
        return true;
    }
    assert!(!faults::ci(), "{test}: MariaDB's Galera provider (galera-4) and rsync are needed under CI=true");
    eprintln!("note: {test} needs galera-4 and rsync; skipped");
    false
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// How many times each SMTP marker is stored, in boxes whose address starts `prefix`.
async fn stored_markers(store: &Store, prefix: &str) -> HashMap<String, usize> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT message_data FROM mail JOIN message ON message_id = mail_message WHERE mail_box LIKE CONCAT(?, '%')",
    )
    .bind(prefix)
    .fetch_all(pool(store))
    .await
    .expect("markers");
    let mut stored: HashMap<String, usize> = HashMap::new();
    for (data,) in rows {
        let text = String::from_utf8_lossy(&data);
        let key = text.strip_prefix(SMTP_MARKER).and_then(|t| t.split("\r\n").next()).unwrap_or("?").to_owned();
        *stored.entry(key).or_default() += 1;
    }
    stored
}

/// Box counters against a recount, for every box.
async fn counters_match(store: &Store) {
    let boxes: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT box_address, box_size, box_mails FROM box").fetch_all(pool(store)).await.expect("boxes");
    for (address, size, mails) in boxes {
        let recount = store.recount(&address).await.expect("recount");
        assert_eq!((size, mails), (recount.bytes, recount.messages), "box {address}: counters differ from a recount");
    }
}

/// The last lines of a daemon's log, for messages.
fn tail(node: &NodeDaemons, program: &str) -> String {
    let text = node.0[program].log_text();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn no_panics(nodes: &[NodeDaemons]) {
    for n in nodes {
        for d in n.0.values() {
            let text = d.log_text();
            assert!(!text.contains("panicked"), "a panic in {}:\n{text}", d.log.display());
        }
    }
}

/// One SMTP transaction to `rcpt` at `addr`: the code answered to the end of DATA, or
/// the first refusal before it.
async fn send_one(addr: SocketAddr, rcpt: &str, key: &str) -> u16 {
    let Ok(s) = TcpStream::connect(addr).await else { return 0 };
    let mut s = BufReader::new(s);
    let code =
        |l: std::io::Result<String>| l.ok().and_then(|l| l.get(..3).and_then(|c| c.parse().ok())).unwrap_or(0u16);
    let _greeting = code(clients::exchange(&mut s, b"").await);
    // EHLO answers several lines; HELO one.
    if code(clients::exchange(&mut s, b"HELO galera.test\r\n").await) != 250 {
        return 0;
    }
    for (cmd, want) in [
        ("MAIL FROM:<sender@galera.test>\r\n".to_owned(), 250),
        (format!("RCPT TO:<{rcpt}>\r\n"), 250),
        ("DATA\r\n".to_owned(), 354),
    ] {
        let c = code(clients::exchange(&mut s, cmd.as_bytes()).await);
        if c != want {
            return c;
        }
    }
    let mut data = clients::smtp_message(key, rcpt, 2048);
    data.extend_from_slice(b".\r\n");
    let c = code(clients::exchange(&mut s, &data).await);
    let _ = clients::exchange(&mut s, b"QUIT\r\n").await;
    c
}

/// A POP3 login at `addr`: the reply to PASS, and the connection (to QUIT later).
async fn pop3_login(addr: SocketAddr, user: &str) -> (String, BufReader<TcpStream>) {
    let mut s = BufReader::new(TcpStream::connect(addr).await.expect("pop3 connect"));
    let _greeting = clients::exchange(&mut s, b"").await.expect("greeting");
    let _ = clients::exchange(&mut s, format!("USER {user}\r\n").as_bytes()).await.expect("USER");
    let pass = clients::exchange(&mut s, format!("PASS {PASSWORD}\r\n").as_bytes()).await.expect("PASS");
    (pass, s)
}

/// The boxes [`smtp_load`] sends to (address, max_mails).
const LOAD_BOXES: [(&str, i64); 4] =
    [("hot@galera.test", 0), ("spread-0@galera.test", 0), ("spread-1@galera.test", 0), ("spread-2@galera.test", 0)];

/// SMTP senders on every node: `per_node` each, to `hot@` (every node into one box)
/// and to `spread-N@`; one ledger per node.
fn smtp_load(nodes: &[NodeDaemons], per_node: usize, stop: &Stop) -> Vec<Ledger> {
    let mut ledgers = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let l = Ledger::default();
        for k in 0..per_node {
            let rcpt = if k % 2 == 0 { "hot@galera.test".to_owned() } else { format!("spread-{i}@galera.test") };
            let tag = format!("n{i}w{k}x{}", common::random_hex(3));
            tokio::spawn(clients::smtp_worker(n.addr("mmsmtpd"), rcpt, tag, 4096, l.clone(), stop.clone()));
        }
        ledgers.push(l);
    }
    ledgers
}

/// Every ledger checked against the database: nothing acknowledged lost, nothing
/// stored twice, nothing refused yet stored.
async fn check_smtp(store: &Store, ledgers: &[Ledger], what: &str) -> Row {
    let stored = stored_markers(store, "").await;
    let all = Ledger::default();
    for l in ledgers {
        for a in l.attempts() {
            all.record(a.key, a.reply);
        }
    }
    let mut row = Row { fault: what.into(), backend: "galera".into(), daemon: "mmsmtpd".into(), ..Row::default() };
    let only_load: HashMap<String, usize> = stored.into_iter().filter(|(k, _)| k.starts_with('n')).collect();
    ledger::check_created(&all, &only_load, &mut row);
    ledger::report(&row);
    assert!(row.ok(), "{what}: {row}\nrefusals: {:?}", all.refusal_samples());
    if row.refused > 0 {
        eprintln!("{what}: refusals {:?}", all.refusal_samples());
    }
    row
}

/// Three daemons of each kind start at once on three nodes (one migrates, the others
/// wait); deliveries from every node into one box and into a box each land exactly once
/// with none refused; 50 deliveries at once into a box with room for 10 leave exactly
/// 10; a maildrop is locked across nodes; a TMTP post through one node reaches a node
/// connected through another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn galera_three_nodes_start_deliver_and_lock() {
    if !runnable("galera_three_nodes_start_deliver_and_lock") {
        return;
    }
    let dir = reachable_dir();
    let parent = dir.path().to_path_buf();
    let cluster = blocking(move || Galera::create(&parent, 3)).await;
    let (nodes, tls) = start_all(&cluster, dir.path(), &["mmsmtpd", "mmpop3d", "mmtmtpd"]).await;

    // Migrated once, lock released.
    let store = store(&cluster, 0).await;
    let (applied, clean): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), CAST(COALESCE(SUM(success), 0) AS SIGNED) FROM _sqlx_migrations")
            .fetch_one(pool(&store))
            .await
            .expect("migrations");
    let (locks,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM _mmmail_migration_lock").fetch_one(pool(&store)).await.expect("lock");
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/mysql"))
        .expect("migrations")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql")))
        .count() as i64;
    assert_eq!((applied, clean, locks), (migrations, migrations, 0), "every migration applied once, the lock released");

    let boxes = [LOAD_BOXES.as_slice(), &[("small@galera.test", 10), ("pop@galera.test", 0)]].concat();
    fixtures(&store, &boxes).await;

    // Load from every node, half of it into one box.
    let stop: Stop = Default::default();
    let ledgers = smtp_load(&nodes, 4, &stop);
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(clients::REPLY_WAIT.min(Duration::from_secs(8))).await;
    let row = check_smtp(&store, &ledgers, "spread over 3 nodes").await;
    assert!(row.acked >= 30, "too little went through: {row}");
    if row.refused > 0 {
        let logs: String = nodes.iter().flat_map(|n| n.0.values()).map(Daemon::log_text).collect();
        let lines: Vec<&str> = logs.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).take(20).collect();
        panic!("deliveries refused (certification conflicts not retried?): {row}\n{}", lines.join("\n"));
    }
    counters_match(&store).await;

    // 50 at once into room for 10, spread over the nodes.
    let mut tasks = Vec::new();
    for k in 0..50 {
        let addr = nodes[k % 3].addr("mmsmtpd");
        tasks.push(tokio::spawn(async move { send_one(addr, "small@galera.test", &format!("small-{k}")).await }));
    }
    let mut codes: HashMap<u16, usize> = HashMap::new();
    for t in tasks {
        *codes.entry(t.await.expect("sender")).or_default() += 1;
    }
    let stored = stored_markers(&store, "small@").await;
    assert_eq!(stored.len(), 10, "box with room for 10 holds {} (answers {codes:?})", stored.len());
    assert!(stored.values().all(|n| *n == 1));
    assert_eq!(codes.get(&250), Some(&10), "exactly the 10 stored were acknowledged: {codes:?}");
    counters_match(&store).await;

    // The maildrop lock across nodes.
    for n in 0..5 {
        let body = clients::smtp_message(&format!("pop-{n}"), "pop@galera.test", 1024);
        let copy = MailCopy { box_address: "pop@galera.test".into(), uid: format!("pop{n}"), trace: Vec::new() };
        store.deliver(&Delivery { body: &body, copies: vec![copy] }).await.expect("prefill");
    }
    let (ok, mut holder) = pop3_login(nodes[0].addr("mmpop3d"), "pop@galera.test").await;
    assert!(ok.starts_with("+OK"), "{ok}");
    for other in [1, 2] {
        let (refused, _) = pop3_login(nodes[other].addr("mmpop3d"), "pop@galera.test").await;
        assert!(refused.starts_with("-ERR [IN-USE]"), "node {other} while node 0 holds the maildrop: {refused}");
    }
    let bye = clients::exchange(&mut holder, b"QUIT\r\n").await.expect("QUIT");
    assert!(bye.starts_with("+OK"), "{bye}");
    // Two logins at the same moment on two nodes: one gets it, the other is told in use.
    for round in 0..5 {
        let (a, b) = (nodes[round % 3].addr("mmpop3d"), nodes[(round + 1) % 3].addr("mmpop3d"));
        let ((ra, mut sa), (rb, mut sb)) =
            tokio::join!(pop3_login(a, "pop@galera.test"), pop3_login(b, "pop@galera.test"));
        let mut answers = [ra.clone(), rb.clone()];
        answers.sort();
        assert!(
            answers[0].starts_with("+OK") && answers[1].starts_with("-ERR [IN-USE]"),
            "round {round}: one login must get the maildrop and the other [IN-USE]: {answers:?}"
        );
        let _ = clients::exchange(&mut sa, b"QUIT\r\n").await;
        let _ = clients::exchange(&mut sb, b"QUIT\r\n").await;
    }
    // TMTP: a node connected through node 0 posts to a node connected through node 2.
    let cfg = dir.path().join("node0").join(format!("mmtmtpd-{}.toml", nodes[0].0["mmtmtpd"].port));
    let (sender, recipient) = (add_tmtp_user(&cfg), add_tmtp_user(&cfg));
    let account = |node: usize, who: &(String, String)| TmtpAccount {
        addr: nodes[node].addr("mmtmtpd"),
        tls: tls.connector(),
        uid: who.0.clone(),
        node: who.1.clone(),
    };
    let drain = {
        let r = account(2, &recipient);
        tokio::spawn(async move { clients::tmtp_drain(&r, Duration::from_secs(12)).await })
    };
    let (posts, stop) = (Ledger::default(), Stop::default());
    let poster = tokio::spawn(clients::tmtp_worker(
        account(0, &sender),
        recipient.0.clone(),
        "tmtp".into(),
        500,
        posts.clone(),
        stop.clone(),
    ));
    let started = Instant::now();
    while posts.acked() < 3 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    poster.await.expect("poster");
    let delivered = drain.await.expect("drain").expect("recipient logs in on node 2");
    let acked: HashMap<String, usize> =
        posts.attempts().into_iter().filter(|a| a.reply == Reply::Acked).map(|a| (a.key, 1)).collect();
    assert!(acked.len() >= 3, "posts acknowledged on node 0: {:?}", posts.refusal_samples());
    assert_eq!(
        delivered,
        acked,
        "every post acknowledged on node 0 reaches the recipient on node 2, once\nnode 0:\n{}\nnode 2:\n{}",
        tail(&nodes[0], "mmtmtpd"),
        tail(&nodes[2], "mmtmtpd")
    );
    no_panics(&nodes);
}

/// Under SMTP load on all three nodes, one node is killed: the daemons on the others go
/// on answering 250, the dead node's daemon answers temporary errors, and after the node
/// rejoins it delivers again. Then a node is cut off from the other two (a non-primary
/// component): its daemons refuse with temporary errors instead of accepting writes.
/// Nothing acknowledged is lost or stored twice, and the nodes agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn galera_node_killed_and_cut_off_under_load() {
    if !runnable("galera_node_killed_and_cut_off_under_load") {
        return;
    }
    let dir = reachable_dir();
    let parent = dir.path().to_path_buf();
    let mut cluster = blocking(move || Galera::create(&parent, 3)).await;
    let (nodes, _) = start_all(&cluster, dir.path(), &["mmsmtpd", "mmpop3d"]).await;
    let store0 = store(&cluster, 0).await;
    fixtures(&store0, &LOAD_BOXES).await;
    let stop: Stop = Default::default();
    let ledgers = smtp_load(&nodes, 2, &stop);
    let acked = |i: usize| ledgers[i].acked();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!((0..3).all(|i| acked(i) > 0), "every node delivers before the fault");

    // Node 2 killed.
    cluster.kill(2);
    let killed = Instant::now();
    let before: Vec<usize> = (0..3).map(acked).collect();
    // Once the sessions on the dead node have seen their connections fail, the daemon
    // answers at once instead of waiting out the pool's acquire_timeout (5 s here).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probe = Instant::now();
    let code = send_one(nodes[2].addr("mmsmtpd"), "hot@galera.test", "probe-dead").await;
    let answered_in = probe.elapsed();
    assert!((400..500).contains(&code), "the dead node's mmsmtpd must answer a temporary error, got {code}");
    eprintln!("dead node: mmsmtpd answered {code} in {:.2} s", answered_in.as_secs_f64());
    assert!(
        answered_in < Duration::from_secs(4),
        "the dead node's mmsmtpd waited {answered_in:?} for its pool instead of failing fast"
    );
    let (pass, _s) = pop3_login(nodes[2].addr("mmpop3d"), "hot@galera.test").await;
    assert!(pass.starts_with("-ERR [SYS/TEMP]"), "the dead node's mmpop3d: {pass}");
    // The survivors go on once Galera has evicted the dead node (evs.suspect_timeout is
    // 3 s here, then a new view): give that time on a loaded machine, node 2 still down.
    let deadline = Instant::now() + Duration::from_secs(20);
    while [0, 1].iter().any(|&i| acked(i) <= before[i]) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in [0, 1] {
        assert!(acked(i) > before[i], "node {i}'s mmsmtpd stopped acknowledging while node 2 was down");
    }
    let dead_acks = ledgers[2].attempts().iter().filter(|a| a.reply == Reply::Acked && a.at > killed).count();
    assert_eq!(dead_acks, 0, "the dead node's mmsmtpd acknowledged mail");

    // Back: it rejoins (state transfer) and delivers again.
    tokio::task::block_in_place(|| cluster.start_node(2, false));
    let back = Instant::now();
    let mut again = false;
    while back.elapsed() < Duration::from_secs(30) {
        if ledgers[2].first_ack_after(back).is_some() {
            again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(again, "node 2's mmsmtpd does not deliver after the node rejoined");
    eprintln!(
        "node 2 down {:.1} s, delivering again {:.1} s after it was synced",
        (back - killed).as_secs_f64(),
        back.elapsed().as_secs_f64()
    );

    // Node 1 cut off from the others: a non-primary component refuses.
    tokio::task::block_in_place(|| cluster.isolate(1, true));
    let cut = Instant::now();
    let code = send_one(nodes[1].addr("mmsmtpd"), "hot@galera.test", "probe-cut").await;
    assert!((400..500).contains(&code), "a cut-off node's mmsmtpd must answer a temporary error, got {code}");
    let (pass, _s) = pop3_login(nodes[1].addr("mmpop3d"), "hot@galera.test").await;
    assert!(pass.starts_with("-ERR [SYS/TEMP]"), "the cut-off node's mmpop3d: {pass}");
    let others: Vec<usize> = [0, 2].iter().map(|i| acked(*i)).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(acked(0) > others[0] && acked(2) > others[1], "the primary component stopped delivering");
    // Acknowledgements from the moment the node was out of the primary component until
    // it was let back (it takes writes again as soon as it is back in, before it is
    // synced).
    let healing = Instant::now();
    tokio::task::block_in_place(|| cluster.isolate(1, false));
    let healed = Instant::now();
    let cut_acks: Vec<f64> = ledgers[1]
        .attempts()
        .iter()
        .filter(|a| a.reply == Reply::Acked && a.at > cut && a.at < healing)
        .map(|a| (a.at - cut).as_secs_f64())
        .collect();
    assert!(
        cut_acks.is_empty(),
        "the cut-off node's mmsmtpd acknowledged mail, seconds after the cut: {cut_acks:?}\n{}",
        tail(&nodes[1], "mmsmtpd")
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(ledgers[1].first_ack_after(healed).is_some(), "node 1 does not deliver after it rejoined");

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let row = check_smtp(&store0, &ledgers, "node killed, node cut off").await;
    counters_match(&store0).await;
    // Every node holds the same mail.
    let mut counts = Vec::new();
    for i in 0..3 {
        let s = store(&cluster, i).await;
        // A node that rejoined a moment ago may abort a new session's first statement
        // with 1213, as it may any transaction: asked again, as the daemons do.
        let mut attempt = 0;
        let n = loop {
            attempt += 1;
            match sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM mail").fetch_one(pool(&s)).await {
                Ok((n,)) => break n,
                Err(e) => {
                    let e = common::StoreError::Db(e);
                    assert!(attempt < 10 && e.is_retryable(), "count on node {i}: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        counts.push(n);
    }
    assert!(counts.iter().all(|c| *c == counts[0]), "the nodes disagree: {counts:?}");
    assert!(row.acked > 0);
    no_panics(&nodes);
}
