//! Load clients that record every reply in a [`Ledger`]: an SMTP sender, a POP3 reader
//! that deletes, and a TMTP poster. Each runs until its stop flag is set, reconnecting
//! after any failure (after a short pause), so it keeps probing while a fault lasts and
//! shows when service is back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::ledger::{Ledger, Reply};

/// How long a client waits for one reply before it counts the connection as broken.
pub const REPLY_WAIT: Duration = Duration::from_secs(60);
/// Pause after a failure before the next try.
const PAUSE: Duration = Duration::from_millis(100);

/// Set to stop every worker sharing it at its next step.
pub type Stop = Arc<AtomicBool>;

fn stopped(stop: &Stop) -> bool {
    stop.load(Ordering::SeqCst)
}

async fn connect(addr: SocketAddr) -> Option<TcpStream> {
    tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await.ok()?.ok()
}

/// Reads one CRLF line (without the line end), waiting at most [`REPLY_WAIT`].
async fn line<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let n = tokio::time::timeout(REPLY_WAIT, r.read_until(b'\n', &mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply"))??;
    if n == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    Ok(String::from_utf8_lossy(&buf).trim_end().to_owned())
}

/// One SMTP reply (multi-line ones joined): its code and its last line.
async fn smtp_reply<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> std::io::Result<(u16, String)> {
    loop {
        let l = line(r).await?;
        let code = l.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        if l.as_bytes().get(3) != Some(&b'-') {
            return Ok((code, l));
        }
    }
}

/// The marker line every SMTP test message starts with.
pub const SMTP_MARKER: &str = "X-Fault-Id: ";

/// A test message of about `size` bytes carrying `key`.
pub fn smtp_message(key: &str, rcpt: &str, size: usize) -> Vec<u8> {
    let mut m =
        format!("{SMTP_MARKER}{key}\r\nFrom: <fault@sender.test>\r\nTo: <{rcpt}>\r\nSubject: fault test {key}\r\n\r\n")
            .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

/// Sends messages to `rcpt` through the SMTP server at `addr` one after another (one
/// connection for many transactions), recording what each end of DATA was answered
/// under the key `<tag>-<n>`. A failure before the end of DATA (a `4xx` at MAIL or RCPT
/// while the database is away) is not a submission and is not recorded.
pub async fn smtp_worker(addr: SocketAddr, rcpt: String, tag: String, size: usize, ledger: Ledger, stop: Stop) {
    let mut seq = 0u64;
    while !stopped(&stop) {
        let Some(stream) = connect(addr).await else {
            tokio::time::sleep(PAUSE).await;
            continue;
        };
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        let session = async {
            if smtp_reply(&mut r).await?.0 != 220 {
                return Ok::<_, std::io::Error>(());
            }
            w.write_all(b"EHLO fault.test\r\n").await?;
            if smtp_reply(&mut r).await?.0 != 250 {
                return Ok(());
            }
            while !stopped(&stop) {
                w.write_all(b"MAIL FROM:<fault@sender.test>\r\n").await?;
                if smtp_reply(&mut r).await?.0 != 250 {
                    return Ok(());
                }
                w.write_all(format!("RCPT TO:<{rcpt}>\r\n").as_bytes()).await?;
                if smtp_reply(&mut r).await?.0 != 250 {
                    return Ok(());
                }
                w.write_all(b"DATA\r\n").await?;
                if smtp_reply(&mut r).await?.0 != 354 {
                    return Ok(());
                }
                seq += 1;
                let key = format!("{tag}-{seq}");
                let mut data = smtp_message(&key, &rcpt, size);
                data.extend_from_slice(b".\r\n");
                w.write_all(&data).await?;
                match smtp_reply(&mut r).await {
                    Ok((250, _)) => ledger.record(key, Reply::Acked),
                    Ok((_, text)) => {
                        ledger.record(key, Reply::Refused(text));
                        return Ok(());
                    }
                    Err(e) => {
                        ledger.record(key, Reply::InDoubt(e.to_string()));
                        return Err(e);
                    }
                }
            }
            let _ = w.write_all(b"QUIT\r\n").await;
            Ok(())
        };
        let _ = session.await;
        if !stopped(&stop) {
            tokio::time::sleep(PAUSE).await;
        }
    }
}

/// Logs in as `user` at the POP3 server at `addr` again and again; each session lists
/// the box, retrieves one message, marks up to three for deletion and QUITs, recording
/// per UIDL what QUIT answered. Every `drop_every`-th session is dropped before QUIT
/// instead (recorded as refused: nothing may be deleted then). A box in use
/// (`[IN-USE]`) or a failed login is tried again after a pause.
pub async fn pop3_worker(
    addr: SocketAddr,
    user: String,
    password: String,
    drop_every: u64,
    ledger: Ledger,
    stop: Stop,
) {
    let mut session_no = 0u64;
    while !stopped(&stop) {
        let Some(stream) = connect(addr).await else {
            tokio::time::sleep(PAUSE).await;
            continue;
        };
        session_no += 1;
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        let session = async {
            if !line(&mut r).await?.starts_with("+OK") {
                return Ok::<bool, std::io::Error>(false);
            }
            w.write_all(format!("USER {user}\r\n").as_bytes()).await?;
            if !line(&mut r).await?.starts_with("+OK") {
                return Ok(false);
            }
            w.write_all(format!("PASS {password}\r\n").as_bytes()).await?;
            if !line(&mut r).await?.starts_with("+OK") {
                return Ok(false);
            }
            w.write_all(b"UIDL\r\n").await?;
            if !line(&mut r).await?.starts_with("+OK") {
                return Ok(false);
            }
            let mut list: Vec<(String, String)> = Vec::new();
            loop {
                let l = line(&mut r).await?;
                if l == "." {
                    break;
                }
                let mut parts = l.split_whitespace();
                if let (Some(n), Some(uid)) = (parts.next(), parts.next()) {
                    list.push((n.to_owned(), uid.to_owned()));
                }
            }
            let start = usize::try_from(session_no).unwrap_or(0) % list.len().max(1);
            let picked: Vec<(String, String)> =
                list.iter().cycle().skip(start).take(list.len().min(3)).cloned().collect();
            if let Some((n, _)) = picked.first() {
                w.write_all(format!("RETR {n}\r\n").as_bytes()).await?;
                if !line(&mut r).await?.starts_with("+OK") {
                    return Ok(false);
                }
                while line(&mut r).await? != "." {}
            }
            for (n, _) in &picked {
                w.write_all(format!("DELE {n}\r\n").as_bytes()).await?;
                if !line(&mut r).await?.starts_with("+OK") {
                    return Ok(false);
                }
            }
            if drop_every > 0 && session_no.is_multiple_of(drop_every) {
                for (_, uid) in &picked {
                    ledger.record(uid.clone(), Reply::Refused("dropped before QUIT".into()));
                }
                return Ok(!picked.is_empty());
            }
            w.write_all(b"QUIT\r\n").await?;
            let reply = match line(&mut r).await {
                Ok(l) if l.starts_with("+OK") => Reply::Acked,
                Ok(l) => Reply::Refused(l),
                Err(e) => Reply::InDoubt(e.to_string()),
            };
            for (_, uid) in &picked {
                ledger.record(uid.clone(), reply.clone());
            }
            Ok(!picked.is_empty())
        };
        let worked = matches!(session.await, Ok(true));
        if !stopped(&stop) && !worked {
            tokio::time::sleep(PAUSE * 3).await;
        }
    }
}

/// A TMTP frame as the server sends it: header JSON and data.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The header.
    pub head: Value,
    /// The data (`datalen` bytes).
    pub data: Vec<u8>,
}

/// A client frame: four hex digits of header length, the header, the data.
pub fn tmtp_frame(head: &Value, data: &[u8]) -> Vec<u8> {
    let json = head.to_string();
    let mut out = format!("{:04x}", json.len()).into_bytes();
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Reads one server frame, waiting at most [`REPLY_WAIT`].
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Frame> {
    let read = async {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).await?;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad frame");
        let n = usize::from_str_radix(std::str::from_utf8(&len).map_err(|_| bad())?, 16).map_err(|_| bad())?;
        let mut head = vec![0u8; n];
        r.read_exact(&mut head).await?;
        let head: Value = serde_json::from_slice(&head).map_err(|_| bad())?;
        let datalen = head.get("datalen").and_then(Value::as_u64).unwrap_or(0);
        let mut data = vec![0u8; usize::try_from(datalen).map_err(|_| bad())?];
        r.read_exact(&mut data).await?;
        Ok(Frame { head, data })
    };
    tokio::time::timeout(REPLY_WAIT, read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no frame"))?
}

/// Where a TMTP poster connects: the server, TLS to trust, and the sender's node.
#[derive(Clone)]
pub struct TmtpAccount {
    /// The server's TLS address.
    pub addr: SocketAddr,
    /// Trusts the server's certificate.
    pub tls: tokio_rustls::TlsConnector,
    /// The sender's uid.
    pub uid: String,
    /// The sender's node secret.
    pub node: String,
}

async fn tmtp_login(account: &TmtpAccount) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = connect(account.addr).await.ok_or_else(|| std::io::Error::other("connect failed"))?;
    let name = rustls_pki_types::ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let mut tls = tokio::time::timeout(Duration::from_secs(10), account.tls.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
    let mut hello = tmtp_frame(&json!({"Op":0,"Id":"rev"}), b"");
    hello.extend_from_slice(&tmtp_frame(&json!({"Op":2,"Uid":account.uid,"Node":account.node}), b""));
    tls.write_all(&hello).await?;
    loop {
        let f = read_frame(&mut tls).await?;
        match f.head["op"].as_str() {
            Some("info") => return Ok(tls),
            Some("quit") => return Err(std::io::Error::other(format!("login refused: {}", f.head))),
            _ => {}
        }
    }
}

/// Posts to `to` as `account` one post after another, recording under the key
/// `<tag>-<n>` (also the first word of the post's data, about `size` bytes) what the
/// server's ack said.
pub async fn tmtp_worker(account: TmtpAccount, to: String, tag: String, size: usize, ledger: Ledger, stop: Stop) {
    let mut seq = 0u64;
    while !stopped(&stop) {
        let Ok(mut tls) = tmtp_login(&account).await else {
            tokio::time::sleep(PAUSE).await;
            continue;
        };
        let session = async {
            while !stopped(&stop) {
                seq += 1;
                let key = format!("{tag}-{seq}");
                let mut data = format!("{key} ").into_bytes();
                data.resize(size.max(data.len()), b'x');
                let head = json!({"Op":7,"Id":key,"Datalen":data.len(),"For":[{"Id":to,"Type":1}]});
                tls.write_all(&tmtp_frame(&head, &data)).await?;
                loop {
                    let f = match read_frame(&mut tls).await {
                        Ok(f) => f,
                        Err(e) => {
                            ledger.record(key, Reply::InDoubt(e.to_string()));
                            return Err(e);
                        }
                    };
                    match (f.head["op"].as_str(), f.head["id"].as_str()) {
                        (Some("ack"), Some(id)) if id == key => {
                            if let Some(e) = f.head.get("error") {
                                ledger.record(key, Reply::Refused(e.to_string()));
                                return Ok(());
                            }
                            if f.head.get("msgid").is_some() {
                                ledger.record(key, Reply::Acked);
                            } else {
                                ledger.record(key, Reply::Refused(format!("ack without msgid: {}", f.head)));
                            }
                            break;
                        }
                        (Some("quit"), _) => {
                            ledger.record(key, Reply::InDoubt(format!("quit: {}", f.head)));
                            return Ok(());
                        }
                        _ => {}
                    }
                }
            }
            Ok::<(), std::io::Error>(())
        };
        let _ = session.await;
        if !stopped(&stop) {
            tokio::time::sleep(PAUSE).await;
        }
    }
}

/// Logs in as the recipient `account` and takes every message queued for it, acking
/// each, until nothing arrives for `quiet`; returns how often each post (by the first
/// word of its data) was delivered.
///
/// # Errors
/// Login or I/O failures.
pub async fn tmtp_drain(
    account: &TmtpAccount,
    quiet: Duration,
) -> std::io::Result<std::collections::HashMap<String, usize>> {
    let mut tls = tmtp_login(account).await?;
    let mut got: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    loop {
        let f = match tokio::time::timeout(quiet, read_frame(&mut tls)).await {
            Err(_) => return Ok(got),
            Ok(f) => f?,
        };
        // Every queued message is acked, as a client does (login notes too: the queue
        // waits for each ack); only posts are counted.
        let op = f.head["op"].as_str().unwrap_or("");
        if matches!(op, "info" | "ack" | "quit") || f.head.get("id").is_none() {
            continue;
        }
        if op == "delivery" {
            let key = String::from_utf8_lossy(&f.data).split(' ').next().unwrap_or("?").to_owned();
            *got.entry(key).or_default() += 1;
        }
        let id = f.head["id"].clone();
        tls.write_all(&tmtp_frame(&json!({"Op":10,"Id":id,"Type":"n"}), b"")).await?;
    }
}

/// Writes `bytes` and reads one line: for short protocol exchanges in tests.
///
/// # Errors
/// I/O errors and timeouts.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    bytes: &[u8],
) -> std::io::Result<String> {
    s.get_mut().write_all(bytes).await?;
    line(s).await
}
