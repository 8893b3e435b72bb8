//! Scaling out on MariaDB Galera (issue 17): SMTP intake and POP3 retrieval on clusters
//! of one, two and three nodes, one mmsmtpd and one mmpop3d per node, each node's
//! daemons loaded by their own clients at the same time. Prints a Markdown table.
//!
//! Needs root, Debian's `galera-4` and `rsync`, and release binaries:
//! `cargo build --release --workspace && cargo bench -p faults --bench galera`
//! (options after `--`: `--clients N` per node, default 8; `--messages N` per client,
//! default 100; `--size BYTES`, default 4096; `--nodes 1,2,3`).

use std::time::Instant;

use faults::galera::{Galera, PASSWORD, fixtures, reachable_dir, start_all, store};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Options {
    clients: usize,
    messages: usize,
    size: usize,
    nodes: Vec<usize>,
}

fn options() -> Options {
    let mut o = Options { clients: 8, messages: 100, size: 4096, nodes: vec![1, 2, 3] };
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    if let Some(v) = value("--clients").and_then(|v| v.parse().ok()) {
        o.clients = v;
    }
    if let Some(v) = value("--messages").and_then(|v| v.parse().ok()) {
        o.messages = v;
    }
    if let Some(v) = value("--size").and_then(|v| v.parse().ok()) {
        o.size = v;
    }
    if let Some(v) = value("--nodes") {
        o.nodes = v.split(',').filter_map(|n| n.parse().ok()).collect();
    }
    o
}

/// One line from the server.
async fn line(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut buf = Vec::new();
    if r.read_until(b'\n', &mut buf).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Sends `messages` messages of `size` bytes to `rcpt` over one SMTP connection, one
/// transaction each; returns how many were answered 250.
async fn smtp_client(addr: std::net::SocketAddr, rcpt: String, messages: usize, size: usize) -> std::io::Result<usize> {
    let mut s = BufReader::new(TcpStream::connect(addr).await?);
    line(&mut s).await?;
    s.get_mut().write_all(b"HELO bench.test\r\n").await?;
    line(&mut s).await?;
    let body = faults::clients::smtp_message("bench", &rcpt, size);
    let mut stored = 0;
    for _ in 0..messages {
        s.get_mut()
            .write_all(format!("MAIL FROM:<bench@sender.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n").as_bytes())
            .await?;
        let replies = [line(&mut s).await?, line(&mut s).await?, line(&mut s).await?];
        if !replies[2].starts_with("354") {
            s.get_mut().write_all(b"RSET\r\n").await?;
            line(&mut s).await?;
            continue;
        }
        s.get_mut().write_all(&body).await?;
        s.get_mut().write_all(b".\r\n").await?;
        if line(&mut s).await?.starts_with("250") {
            stored += 1;
        }
    }
    s.get_mut().write_all(b"QUIT\r\n").await?;
    Ok(stored)
}

/// Retrieves and deletes every message of `user`'s box in one POP3 session; returns
/// how many.
async fn pop3_client(addr: std::net::SocketAddr, user: String) -> std::io::Result<usize> {
    let mut s = BufReader::new(TcpStream::connect(addr).await?);
    line(&mut s).await?;
    s.get_mut().write_all(format!("USER {user}\r\nPASS {PASSWORD}\r\nSTAT\r\n").as_bytes()).await?;
    line(&mut s).await?;
    let pass = line(&mut s).await?;
    if !pass.starts_with("+OK") {
        return Err(std::io::Error::other(format!("login {user}: {pass}")));
    }
    let stat = line(&mut s).await?;
    let count: usize = stat.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
    for i in 1..=count {
        s.get_mut().write_all(format!("RETR {i}\r\nDELE {i}\r\n").as_bytes()).await?;
        while line(&mut s).await? != ".\r\n" {}
        line(&mut s).await?;
    }
    s.get_mut().write_all(b"QUIT\r\n").await?;
    let bye = line(&mut s).await?;
    if !bye.starts_with("+OK") {
        return Err(std::io::Error::other(format!("QUIT {user}: {bye}")));
    }
    Ok(count)
}

struct Measured {
    nodes: usize,
    smtp_rate: f64,
    smtp_refused: usize,
    pop3_rate: f64,
}

async fn one_cluster(n: usize, o: &Options) -> Measured {
    let dir = reachable_dir();
    let parent = dir.path().to_path_buf();
    let cluster = tokio::task::spawn_blocking(move || Galera::create(&parent, n)).await.expect("cluster");
    let (daemons, _) = start_all(&cluster, dir.path(), &["mmsmtpd", "mmpop3d"]).await;
    let st = store(&cluster, 0).await;
    let boxes: Vec<String> =
        (0..n).flat_map(|node| (0..o.clients).map(move |c| format!("b{node}-{c}@galera.test"))).collect();
    let specs: Vec<(&str, i64)> = boxes.iter().map(|b| (b.as_str(), 0)).collect();
    fixtures(&st, &specs).await;

    let start = Instant::now();
    let mut tasks = Vec::new();
    for (node, d) in daemons.iter().enumerate() {
        for c in 0..o.clients {
            tasks.push(tokio::spawn(smtp_client(
                d.addr("mmsmtpd"),
                format!("b{node}-{c}@galera.test"),
                o.messages,
                o.size,
            )));
        }
    }
    let mut stored = 0;
    for t in tasks {
        stored += t.await.expect("smtp client").expect("smtp session");
    }
    let smtp_secs = start.elapsed().as_secs_f64();
    let attempted = n * o.clients * o.messages;

    let start = Instant::now();
    let mut tasks = Vec::new();
    for (node, d) in daemons.iter().enumerate() {
        for c in 0..o.clients {
            tasks.push(tokio::spawn(pop3_client(d.addr("mmpop3d"), format!("b{node}-{c}@galera.test"))));
        }
    }
    let mut retrieved = 0;
    for t in tasks {
        retrieved += t.await.expect("pop3 client").expect("pop3 session");
    }
    let pop3_secs = start.elapsed().as_secs_f64();
    assert_eq!(retrieved, stored, "POP3 retrieved what SMTP stored");
    drop(daemons);
    drop(cluster);
    Measured {
        nodes: n,
        smtp_rate: stored as f64 / smtp_secs,
        smtp_refused: attempted - stored,
        pop3_rate: retrieved as f64 / pop3_secs,
    }
}

fn main() {
    let o = options();
    if !faults::is_root() || !Galera::available() {
        eprintln!("the Galera benchmark needs root, galera-4 and rsync; nothing measured");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut rows = Vec::new();
    for &n in &o.nodes {
        eprintln!("cluster of {n} node(s)…");
        rows.push(rt.block_on(one_cluster(n, &o)));
    }
    println!(
        "\nGalera, {} client(s) per node, {} message(s) of {} bytes each; one mmsmtpd and one mmpop3d per node\n",
        o.clients, o.messages, o.size
    );
    println!("| nodes | SMTP intake msg/s | per node | not stored | POP3 RETR+DELE msg/s | per node |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.0} | {} | {:.0} | {:.0} |",
            r.nodes,
            r.smtp_rate,
            r.smtp_rate / r.nodes as f64,
            r.smtp_refused,
            r.pop3_rate,
            r.pop3_rate / r.nodes as f64
        );
    }
}
