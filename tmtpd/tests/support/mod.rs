//! Shared by the mmtmtpd tests: a real daemon on loopback with TLS, fixtures made with
//! `mmtmtpd admin`, a TLS client that reads server frames (acking queued ones like mnm's
//! clients do), and OpenID Connect keys served from loopback.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::testing::{Daemon, ROOT_OK, TestCert};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Mutex, mpsc};

pub type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mmtmtpd"))
}

/// One server frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub head: Value,
    pub data: Vec<u8>,
    /// The exact bytes received (prefix, header, data).
    pub raw: Vec<u8>,
}

impl Frame {
    pub fn op(&self) -> &str {
        self.head["op"].as_str().unwrap_or("")
    }
    pub fn queued(&self) -> bool {
        self.head.get("from").is_some() && self.head.get("id").is_some() && self.op() != "ohi"
    }
}

/// A client connection: frames arrive on `rx`; queued ones are acked at once.
pub struct Peer {
    pub w: Arc<Mutex<WriteHalf<Tls>>>,
    pub rx: mpsc::UnboundedReceiver<Frame>,
    pub eof: Arc<tokio::sync::Notify>,
    pub closed: Arc<std::sync::atomic::AtomicBool>,
    /// The server ended the TLS stream with close_notify (RFC 8446 §6.1).
    pub clean: Arc<std::sync::atomic::AtomicBool>,
}

pub fn frame(head: &Value) -> Vec<u8> {
    let json = serde_json::to_vec(head).unwrap();
    let mut out = format!("{:04x}", json.len()).into_bytes();
    out.extend_from_slice(&json);
    out
}

/// Reads frames until the stream ends; true when it ended in order (rustls reports an
/// end without close_notify as an error).
async fn read_frames(
    mut r: ReadHalf<Tls>,
    w: Arc<Mutex<WriteHalf<Tls>>>,
    tx: mpsc::UnboundedSender<Frame>,
    ack: bool,
) -> bool {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        // Parse every complete frame in the buffer.
        loop {
            if buf.len() < 4 {
                break;
            }
            let Ok(h) = usize::from_str_radix(std::str::from_utf8(&buf[..4]).unwrap_or("zzzz"), 16) else {
                return false;
            };
            if buf.len() < 4 + h {
                break;
            }
            let head: Value = serde_json::from_slice(&buf[4..4 + h]).unwrap();
            let datalen = head.get("datalen").and_then(Value::as_u64).unwrap_or(0) as usize;
            if buf.len() < 4 + h + datalen {
                break;
            }
            let raw: Vec<u8> = buf.drain(..4 + h + datalen).collect();
            let f = Frame { head, data: raw[4 + h..].to_vec(), raw };
            if ack && f.queued() {
                let id = f.head["id"].as_str().unwrap().to_owned();
                let _ = w.lock().await.write_all(&frame(&json!({"Op":10,"Id":id,"Type":"n"}))).await;
            }
            if tx.send(f).is_err() {
                return false;
            }
        }
        match r.read(&mut chunk).await {
            Ok(0) => return true,
            Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

impl Peer {
    pub async fn connect(addr: std::net::SocketAddr, cert: &TestCert, ack: bool) -> Peer {
        Self::connect_after(addr, cert, ack, b"").await
    }

    /// As [`connect`](Self::connect), sending `prelude` (a PROXY protocol header, as a
    /// proxy in TCP mode would) before the TLS handshake.
    pub async fn connect_after(addr: std::net::SocketAddr, cert: &TestCert, ack: bool, prelude: &[u8]) -> Peer {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(prelude).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = cert.connector().connect(name, tcp).await.unwrap();
        let (r, w) = tokio::io::split(tls);
        let w = Arc::new(Mutex::new(w));
        let (tx, rx) = mpsc::unbounded_channel();
        let eof = Arc::new(tokio::sync::Notify::new());
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clean = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (w2, eof2, closed2, clean2) = (w.clone(), eof.clone(), closed.clone(), clean.clone());
        tokio::spawn(async move {
            let in_order = read_frames(r, w2, tx, ack).await;
            clean2.store(in_order, std::sync::atomic::Ordering::SeqCst);
            closed2.store(true, std::sync::atomic::Ordering::SeqCst);
            eof2.notify_waiters();
        });
        Peer { w, rx, eof, closed, clean }
    }

    /// Ends the client's side (TLS close_notify, then the TCP FIN), as a client that
    /// goes away mid-request; dropping a `Peer` does not, as its reader holds the link.
    pub async fn hang_up(&self) {
        let _ = self.w.lock().await.shutdown().await;
    }

    pub async fn send(&self, bytes: &[u8]) {
        let mut w = self.w.lock().await;
        let _ = w.write_all(bytes).await;
        let _ = w.flush().await;
    }

    pub async fn send_head(&self, head: Value, data: &[u8]) {
        let mut bytes = frame(&head);
        bytes.extend_from_slice(data);
        self.send(&bytes).await;
    }

    /// The next frame within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Frame> {
        tokio::time::timeout(wait, self.rx.recv()).await.ok().flatten()
    }

    /// Every frame arriving until `quiet` passes without one.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = self.next(quiet).await {
            out.push(f);
        }
        out
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the stream ended with close_notify (meaningful once closed).
    pub fn closed_cleanly(&self) -> bool {
        self.clean.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// TmtpRev then Login, in one write; returns the frames up to `info`.
    pub async fn login(&mut self, uid: &str, node: &str) -> Vec<Frame> {
        let mut bytes = frame(&json!({"Op":0,"Id":"1"}));
        bytes.extend_from_slice(&frame(&json!({"Op":2,"Uid":uid,"Node":node})));
        self.send(&bytes).await;
        let mut got = Vec::new();
        while let Some(f) = self.next(Duration::from_secs(10)).await {
            let done = f.op() == "info" || f.op() == "quit";
            got.push(f);
            if done {
                break;
            }
        }
        got
    }
}

/// An RSA key for signing test id_tokens, and its JWKS.
pub struct Oidc {
    pkcs8: Vec<u8>,
    pub jwks: String,
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Oidc {
    /// A fresh 2048-bit key made with openssl.
    pub fn generate(dir: &Path) -> Oidc {
        let pem = dir.join("oidc.pem");
        let der = dir.join("oidc.der");
        assert!(
            Command::new("openssl")
                .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
                .arg(&pem)
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
                .success()
        );
        assert!(
            Command::new("openssl")
                .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
                .arg(&pem)
                .arg("-out")
                .arg(&der)
                .status()
                .unwrap()
                .success()
        );
        let out = Command::new("openssl").args(["rsa", "-noout", "-modulus", "-in"]).arg(&pem).output().unwrap();
        let hex = String::from_utf8(out.stdout).unwrap().trim().trim_start_matches("Modulus=").to_owned();
        let n: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let jwks =
            json!({"keys":[{"kty":"RSA","kid":"kid","alg":"RS256","use":"sig","n":b64(&n),"e":"AQAB"}]}).to_string();
        Oidc { pkcs8: std::fs::read(&der).unwrap(), jwks }
    }

    /// A signed RS256 id_token with these claims.
    pub fn token(&self, claims: &Value) -> String {
        let header = b64(br#"{"alg":"RS256","kid":"kid","typ":"JWT"}"#);
        let body = b64(claims.to_string().as_bytes());
        let signing = format!("{header}.{body}");
        let key = ring::signature::RsaKeyPair::from_pkcs8(&self.pkcs8).unwrap();
        let mut sig = vec![0u8; key.public().modulus_len()];
        key.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signing.as_bytes(), &mut sig)
            .unwrap();
        format!("{signing}.{}", b64(&sig))
    }

    /// A valid token for the suite's provider (iss `issuer`, aud `audience`).
    pub fn valid(&self) -> String {
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 60;
        self.token(&json!({"aud":"audience","exp":exp,"iss":"issuer","sub":"subject"}))
    }

    /// Serves the JWKS at `http://127.0.0.1:PORT/keys`; returns the port.
    pub async fn serve(&self) -> u16 {
        use http_body_util::Full;
        use hyper::body::Bytes;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = Bytes::from(self.jwks.clone());
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else { return };
                let body = body.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let body = body.clone();
                        async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        port
    }
}

/// Runs `mmtmtpd -c config admin …`; returns its output lines.
pub fn admin(config: &Path, args: &[&str]) -> Vec<String> {
    let out = Command::new(bin()).arg("-c").arg(config).arg("admin").args(args).output().unwrap();
    assert!(out.status.success(), "admin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

/// The config of the verify pass (spec §13.2): name Verify, auth 1, provider X. `extra`
/// goes into `[tmtpd]`; what follows a `[listen]` line in it goes into `[listen]`.
pub fn config(url: &str, cert: &TestCert, port: u16, keys_port: u16, auth: u8, extra: &str) -> String {
    let (extra, listen) = extra.split_once("[listen]\n").unwrap_or((extra, ""));
    format!(
        r#"[server]
name = "tmtp.example.org"
[database]
url = "{url}"
[listen]
tls_addresses = ["127.0.0.1:{port}"]
{listen}
[tls]
cert = "{cert}"
key = "{key}"
[limits]
max_per_address = 0
connection_rate = 0
error_delay = 0
[tmtpd]
name = "Verify"
auth = {auth}
{extra}
[[tmtpd.authby]]
label = "X"
login = ["https://example.com/l", "a", "b"]
token = ["https://example.com/t", "c"]
std = ["d"]
keys = "http://127.0.0.1:{keys_port}/keys"
iss = "issuer"
aud = "audience"
{ROOT_OK}"#,
        cert = cert.cert.display(),
        key = cert.key.display()
    )
}

/// A started mmtmtpd with the suite's fixtures: users u100002 and u100003 with two nodes
/// each, aliases test1 and test11 (u100002) and test2 (u100003), and group blab with
/// u100002 invited as test1.
pub struct Suite {
    pub daemon: Daemon,
    /// The config file the daemon runs with.
    pub config: PathBuf,
    pub cert: TestCert,
    pub oidc: Oidc,
    /// (uid, [node0, node1]) of u100002 and u100003.
    pub send: (String, Vec<String>),
    pub recv: (String, Vec<String>),
    pub dir: tempfile::TempDir,
}

pub async fn suite(url: &str, extra: &str) -> Suite {
    suite_with(url, 1, extra).await
}

/// [`suite`] with another `auth`.
pub async fn suite_with(url: &str, auth: u8, extra: &str) -> Suite {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate(dir.path());
    let oidc = {
        let d = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || Oidc::generate(&d)).await.unwrap()
    };
    let keys_port = oidc.serve().await;
    // Blocking waits go to a blocking thread: on a runtime worker they would also
    // hold back the JWKS server task just spawned (tokio runs it on this worker).
    let (path, url2, extra2) = (dir.path().to_path_buf(), url.to_owned(), extra.to_owned());
    let (cert_path, key_path, der) = (cert.cert.clone(), cert.key.clone(), cert.der.clone());
    let daemon = tokio::task::spawn_blocking(move || {
        let cert = TestCert { cert: cert_path, key: key_path, der };
        Daemon::start(&bin(), &path, |port| config(&url2, &cert, port, keys_port, auth, &extra2))
    })
    .await
    .unwrap();
    let cfg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "toml"))
        .unwrap();
    let cfg_path = cfg.clone();
    let (send, recv) = tokio::task::spawn_blocking(move || {
        let send = admin(&cfg, &["add-user", "u100002", "--nodes", "2"]);
        let recv = admin(&cfg, &["add-user", "u100003", "--nodes", "2"]);
        admin(&cfg, &["add-alias", "test1", "u100002"]);
        admin(&cfg, &["add-alias", "test11", "u100002"]);
        admin(&cfg, &["add-alias", "test2", "u100003"]);
        admin(&cfg, &["set-member", "blab", "u100002", "test1", "invited"]);
        (send, recv)
    })
    .await
    .unwrap();
    Suite {
        daemon,
        config: cfg_path,
        cert,
        oidc,
        send: (send[0].clone(), send[1..].to_vec()),
        recv: (recv[0].clone(), recv[1..].to_vec()),
        dir,
    }
}
