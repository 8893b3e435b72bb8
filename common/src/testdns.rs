//! A DNS server on loopback for the tests of the checks (issue 14): it answers from
//! records the test gives it, over UDP, with hickory's wire codec, so nothing a test
//! looks up leaves the machine. Names can be made silent (a server that never answers)
//! or answer SERVFAIL.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// One record a name answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rec {
    /// An A record.
    A(Ipv4Addr),
    /// An AAAA record.
    Aaaa(Ipv6Addr),
    /// A TXT record of these character-strings (each longer than 255 bytes is split).
    Txt(Vec<String>),
    /// A record of the obsolete SPF type (RFC 4408; type 99).
    Spf(Vec<String>),
    /// A PTR record.
    Ptr(String),
    /// An MX record: preference, exchange.
    Mx(u16, String),
    /// A CNAME record.
    Cname(String),
    /// No record: the name's SPF-type records are not published as TXT too.
    NoTxt,
}

/// What a name does besides its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Silent,
    ServFail,
}

#[derive(Default)]
struct Zone {
    records: HashMap<String, Vec<Rec>>,
    modes: HashMap<String, Mode>,
}

/// The server: it runs on its own thread until dropped.
pub struct TestDns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn name(text: &str) -> Name {
    let mut n = Name::from_ascii(text).unwrap_or_else(|_| Name::root());
    n.set_fqdn(true);
    n
}

fn strings(parts: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for p in parts {
        let mut rest = p.as_str();
        while rest.len() > 255 {
            let mut cut = 255;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push(rest[..cut].to_owned());
            rest = &rest[cut..];
        }
        out.push(rest.to_owned());
    }
    out
}

impl Zone {
    /// The records of `owner` of type `qtype`, following CNAMEs (at most 8).
    fn answer(&self, owner: &str, qtype: RecordType, out: &mut Vec<Record>) -> bool {
        let mut current = key(owner);
        for _ in 0..8 {
            let Some(recs) = self.records.get(&current) else { return !out.is_empty() };
            let has_txt = recs.iter().any(|r| matches!(r, Rec::Txt(_) | Rec::NoTxt));
            let mut next = None;
            for r in recs {
                let rdata = match (r, qtype) {
                    (Rec::A(a), RecordType::A) => RData::A(A(*a)),
                    (Rec::Aaaa(a), RecordType::AAAA) => RData::AAAA(AAAA(*a)),
                    (Rec::Txt(t), RecordType::TXT) => RData::TXT(TXT::new(strings(t))),
                    // A name with only SPF-type records publishes them as TXT too (the
                    // OpenSPF test suite's convention).
                    (Rec::Spf(t), RecordType::TXT) if !has_txt => RData::TXT(TXT::new(strings(t))),
                    (Rec::Ptr(p), RecordType::PTR) => RData::PTR(PTR(name(p))),
                    (Rec::Mx(pref, x), RecordType::MX) => RData::MX(MX::new(*pref, name(x))),
                    (Rec::Cname(c), RecordType::CNAME) => RData::CNAME(CNAME(name(c))),
                    (Rec::Cname(c), _) => {
                        next = Some(c.clone());
                        RData::CNAME(CNAME(name(c)))
                    }
                    _ => continue,
                };
                out.push(Record::from_rdata(name(&current), 300, rdata));
            }
            match next {
                Some(n) => current = key(&n),
                None => return true,
            }
        }
        true
    }
}

impl TestDns {
    /// Starts a server on a free UDP port of 127.0.0.1.
    ///
    /// # Panics
    /// If no socket can be bound.
    pub fn start() -> TestDns {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP port");
        socket.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
        let addr = socket.local_addr().expect("local address");
        let zone = Arc::new(Mutex::new(Zone::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let (z, s, q) = (zone.clone(), stop.clone(), queries.clone());
        let thread = std::thread::spawn(move || serve(&socket, &z, &s, &q));
        TestDns { addr, zone, stop, queries, thread: Some(thread) }
    }

    /// The server's address (for `[dns] servers`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds record `rec` to `owner`.
    pub fn add(&self, owner: &str, rec: Rec) {
        self.lock().records.entry(key(owner)).or_default().push(rec);
    }

    /// Queries for `owner` (any type) are never answered.
    pub fn silence(&self, owner: &str) {
        self.lock().modes.insert(key(owner), Mode::Silent);
    }

    /// Queries for `owner` are answered SERVFAIL.
    pub fn servfail(&self, owner: &str) {
        self.lock().modes.insert(key(owner), Mode::ServFail);
    }

    /// Forgets every record and mode.
    pub fn clear(&self) {
        let mut z = self.lock();
        z.records.clear();
        z.modes.clear();
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Zone> {
        self.zone.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(socket: &UdpSocket, zone: &Mutex<Zone>, stop: &AtomicBool, queries: &AtomicUsize) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
        queries.fetch_add(1, Ordering::Relaxed);
        let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
        let Some(q) = query.queries.first().cloned() else { continue };
        let owner = key(&q.name().to_ascii());
        let mut reply = Message::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
        reply.metadata.authoritative = true;
        reply.metadata.recursion_desired = query.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.add_query(q.clone());
        {
            let z = zone.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match z.modes.get(&owner) {
                Some(Mode::Silent) => continue,
                Some(Mode::ServFail) => reply.metadata.response_code = ResponseCode::ServFail,
                None => {
                    let mut answers = Vec::new();
                    if z.answer(&owner, q.query_type(), &mut answers) {
                        reply.add_answers(answers);
                    } else {
                        reply.metadata.response_code = ResponseCode::NXDomain;
                    }
                }
            }
        }
        if let Ok(bytes) = reply.to_vec() {
            let _ = socket.send_to(&bytes, from);
        }
    }
}
