//! `mmpop3-load`: a compiled POP3 client for benchmarks (issue 16). Each name on the
//! command line is one session, a thread of its own: it logs in (USER/PASS, RFC 1939
//! §7), checks the message count with STAT, waits until every session is logged in,
//! then sends RETR and DELE for each message, one command at a time, and QUIT. It
//! prints the messages per second from the moment all sessions were logged in to the
//! last QUIT's answer.
//!
//! It exists because a client in Python spent more CPU per message than the servers it
//! measured: on two cores, ten such clients left the servers too little to show their
//! difference. This one reads each reply with as few system calls as it can and does no
//! parsing beyond finding a reply's end. The password comes from standard input, never
//! from the command line.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Parser;

/// POP3 retrieval load: RETR+DELE of every message of each box, one session per box.
#[derive(Parser)]
#[command(name = "mmpop3-load", version)]
struct Args {
    /// Server address (plain POP3).
    #[arg(long, default_value = "127.0.0.1:110")]
    addr: SocketAddr,
    /// Messages each box must hold (checked with STAT before the clock starts).
    #[arg(long)]
    expect: usize,
    /// Login names, one session each; the password (the same for all) is the first line
    /// of standard input.
    #[arg(required = true)]
    users: Vec<String>,
}

/// One POP3 connection: replies read into a buffer kept across commands.
struct Session {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` that hold data.
    len: usize,
}

impl Session {
    fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(300)))?;
        let mut s = Session { stream, buf: vec![0; 1 << 18], len: 0 };
        s.status()?;
        Ok(s)
    }

    fn fill(&mut self) -> anyhow::Result<()> {
        if self.len == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.stream.read(&mut self.buf[self.len..])?;
        anyhow::ensure!(n > 0, "the server closed the connection");
        self.len += n;
        Ok(())
    }

    /// Reads a status line (and nothing after it may be buffered: one command at a
    /// time); an `-ERR` is an error.
    fn status(&mut self) -> anyhow::Result<String> {
        while !self.buf[..self.len].ends_with(b"\r\n") {
            self.fill()?;
        }
        let line = String::from_utf8_lossy(&self.buf[..self.len - 2]).into_owned();
        self.len = 0;
        anyhow::ensure!(line.starts_with("+OK"), "{line}");
        Ok(line)
    }

    fn command(&mut self, text: &str) -> anyhow::Result<String> {
        self.stream.write_all(format!("{text}\r\n").as_bytes())?;
        self.status()
    }

    /// A multi-line reply: the status line, then data up to the terminating `.` line
    /// (RFC 1939 §3). Returns its size in octets.
    fn multi(&mut self, text: &str) -> anyhow::Result<usize> {
        self.stream.write_all(format!("{text}\r\n").as_bytes())?;
        loop {
            let data = &self.buf[..self.len];
            if let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
                anyhow::ensure!(data.starts_with(b"+OK"), "{}", String::from_utf8_lossy(&data[..end]));
                let body = &data[end + 2..];
                if body.ends_with(b"\r\n.\r\n") || body == b".\r\n" {
                    let n = self.len;
                    self.len = 0;
                    return Ok(n);
                }
            }
            self.fill()?;
        }
    }
}

fn login(addr: SocketAddr, user: &str, password: &str, expect: usize) -> anyhow::Result<Session> {
    let mut s = Session::connect(addr)?;
    s.command(&format!("USER {user}"))?;
    s.command(&format!("PASS {password}"))?;
    let stat = s.command("STAT")?;
    let count = stat.split(' ').nth(1).and_then(|n| n.parse::<usize>().ok());
    if count != Some(expect) {
        // QUIT with nothing marked: the box is given back at once and left as it was.
        let _ = s.command("QUIT");
        match count {
            Some(count) => anyhow::bail!("{user}: {count} messages listed, {expect} expected"),
            None => anyhow::bail!("{user}: STAT answered {stat:?}, not a count"),
        }
    }
    Ok(s)
}

fn empty(mut s: Session, count: usize) -> anyhow::Result<Instant> {
    for i in 1..=count {
        s.multi(&format!("RETR {i}"))?;
        s.command(&format!("DELE {i}"))?;
    }
    s.command("QUIT")?;
    Ok(Instant::now())
}

fn main() -> ExitCode {
    let a = Args::parse();
    let mut password = String::new();
    if std::io::stdin().lock().read_line(&mut password).is_err() || password.trim_end().is_empty() {
        eprintln!("mmpop3-load: the password must be the first line of standard input");
        return ExitCode::FAILURE;
    }
    let password = Arc::new(password.trim_end_matches(['\r', '\n']).to_owned());
    let ready = Arc::new(Barrier::new(a.users.len() + 1));
    let sessions: Vec<_> = a
        .users
        .iter()
        .map(|user| {
            let (user, password, ready) = (user.clone(), password.clone(), ready.clone());
            let (addr, expect) = (a.addr, a.expect);
            std::thread::spawn(move || {
                let s = login(addr, &user, &password, expect);
                ready.wait();
                empty(s?, expect)
            })
        })
        .collect();
    ready.wait();
    let start = Instant::now();
    let mut last = start;
    for t in sessions {
        match t.join() {
            Ok(Ok(end)) => last = last.max(end),
            Ok(Err(e)) => {
                eprintln!("mmpop3-load: {e}");
                return ExitCode::FAILURE;
            }
            Err(_) => return ExitCode::FAILURE,
        }
    }
    let secs = (last - start).as_secs_f64();
    let messages = a.users.len() * a.expect;
    println!("{messages} messages in {secs:.3} s: {:.0} msg/s", messages as f64 / secs);
    ExitCode::SUCCESS
}
