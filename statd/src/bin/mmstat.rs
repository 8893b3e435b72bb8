//! `mmstat`: shows, resets and deletes mmstatd's counters by `*`/`?` pattern, watches
//! them change, and prints JSON for scripts (spec/mail.md §5.2 "mmstat command"). It
//! talks to mmstatd's query socket; exit status 0, 1 on error, 2 on usage error.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use statd::config::{Config, DEFAULT_QUERY_SOCKET};

/// Shows and changes mmstatd's counters.
#[derive(Parser)]
#[command(name = "mmstat", version)]
struct Args {
    /// mmstatd's query socket (default: from -c, else /var/run/mmstatd/query.sock).
    #[arg(short = 'q', long = "query-socket", global = true)]
    socket: Option<PathBuf>,
    /// Take the query socket from this mmstatd config file.
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Shows the keys matching PATTERN (default "*"), sorted.
    #[command(alias = "s")]
    Show {
        /// `*`/`?` pattern, case-sensitive, anchored.
        pattern: Option<String>,
        /// One JSON array of {key, value, flag, created, modified} objects.
        #[arg(long)]
        json: bool,
    },
    /// Shows PATTERN again every INTERVAL seconds with each key's change per second.
    #[command(alias = "w")]
    Watch {
        /// `*`/`?` pattern.
        pattern: Option<String>,
        /// Seconds between refreshes.
        #[arg(short = 'n', long, default_value_t = 2.0)]
        interval: f64,
        /// Stop after this many refreshes (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Sets the keys matching PATTERN to 0.
    #[command(alias = "r")]
    Reset {
        /// `*`/`?` pattern.
        pattern: String,
    },
    /// Removes the keys matching PATTERN.
    #[command(alias = "d")]
    Delete {
        /// `*`/`?` pattern.
        pattern: String,
    },
    /// Adds DELTA to KEY (created with FLAG, P or V, default P).
    #[command(alias = "u", allow_negative_numbers = true)]
    Update {
        /// The key.
        key: String,
        /// Signed 64-bit amount.
        delta: i64,
        /// P (persistent) or V (volatile).
        flag: Option<String>,
    },
    /// Sets KEY to VALUE (created with FLAG, P or V, default P).
    #[command(allow_negative_numbers = true)]
    Set {
        /// The key.
        key: String,
        /// Signed 64-bit value.
        value: i64,
        /// P (persistent) or V (volatile).
        flag: Option<String>,
    },
    /// Removes every volatile key.
    DeleteVolatile,
}

/// One line of a LIST answer.
#[derive(serde::Serialize)]
struct Entry {
    key: String,
    value: i64,
    flag: String,
    created: String,
    modified: String,
}

fn ask(socket: &PathBuf, request: &str) -> anyhow::Result<Vec<String>> {
    let mut s =
        UnixStream::connect(socket).map_err(|e| anyhow::anyhow!("{}: {e} (is mmstatd running?)", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(format!("{request}\n").as_bytes())?;
    let mut lines: Vec<String> = Vec::new();
    for line in BufReader::new(s).lines() {
        let line = line?;
        if line == "." {
            return match lines.first() {
                Some(l) if l.starts_with("-ERR ") => anyhow::bail!("mmstatd: {}", &l[5..]),
                _ => Ok(lines),
            };
        }
        lines.push(line);
    }
    anyhow::bail!("mmstatd closed the connection before the end of its answer")
}

fn list(socket: &PathBuf, pattern: &str) -> anyhow::Result<Vec<Entry>> {
    ask(socket, &format!("LIST {pattern}"))?
        .into_iter()
        .map(|l| {
            let mut p = l.splitn(5, ' ');
            let mut next = || p.next().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("bad answer line: {l}"));
            let (flag, created, modified, value, key) = (next()?, next()?, next()?, next()?, next()?);
            Ok(Entry { key, value: value.parse()?, flag, created, modified })
        })
        .collect()
}

fn table(entries: &[Entry], rates: Option<&HashMap<String, f64>>) -> String {
    let width = entries.iter().map(|e| e.value.to_string().len()).max().unwrap_or(1);
    let mut out = String::new();
    for e in entries {
        out.push_str(&format!("{}  {}  {}  {:>width$}  ", e.flag, e.created, e.modified, e.value));
        if let Some(r) = rates {
            out.push_str(&format!("{:>10.1}/s  ", r.get(&e.key).copied().unwrap_or(0.0)));
        }
        out.push_str(&e.key);
        out.push('\n');
    }
    out
}

fn ok_count(lines: &[String]) -> String {
    lines.first().and_then(|l| l.strip_prefix("+OK ")).unwrap_or("?").to_owned()
}

fn run(args: Args) -> anyhow::Result<()> {
    let socket = match (args.socket, args.config) {
        (Some(s), _) => s,
        (None, Some(c)) => common::config::load::<Config>(&c)?.statd.query_socket,
        (None, None) => PathBuf::from(DEFAULT_QUERY_SOCKET),
    };
    let flag = |f: Option<String>| match f.as_deref() {
        None => Ok("P"),
        Some("P" | "p") => Ok("P"),
        Some("V" | "v") => Ok("V"),
        Some(other) => Err(anyhow::anyhow!("flag must be P or V, not {other}")),
    };
    match args.command {
        Command::Show { pattern, json } => {
            let entries = list(&socket, pattern.as_deref().unwrap_or("*"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                print!("{}", table(&entries, None));
            }
        }
        Command::Watch { pattern, interval, count } => {
            let pattern = pattern.unwrap_or_else(|| "*".into());
            let interval = Duration::from_secs_f64(interval.clamp(0.1, 86400.0));
            let mut before: Option<(Instant, HashMap<String, i64>)> = None;
            let mut shown = 0u64;
            loop {
                let entries = list(&socket, &pattern)?;
                let at = Instant::now();
                let rates = before.as_ref().map(|(t, old)| {
                    let secs = at.duration_since(*t).as_secs_f64().max(1e-3);
                    entries
                        .iter()
                        .map(|e| (e.key.clone(), (e.value - old.get(&e.key).copied().unwrap_or(e.value)) as f64 / secs))
                        .collect::<HashMap<_, _>>()
                });
                print!(
                    "\x1b[H\x1b[2J{} keys matching {pattern:?} every {:.1} s (Ctrl-C to stop)\n\n{}",
                    entries.len(),
                    interval.as_secs_f64(),
                    table(&entries, Some(&rates.unwrap_or_default()))
                );
                std::io::stdout().flush()?;
                before = Some((at, entries.into_iter().map(|e| (e.key, e.value)).collect()));
                shown += 1;
                if count.is_some_and(|c| shown >= c) {
                    break;
                }
                std::thread::sleep(interval);
            }
        }
        Command::Reset { pattern } => {
            println!("{} key(s) reset", ok_count(&ask(&socket, &format!("RESET {pattern}"))?))
        }
        Command::Delete { pattern } => {
            println!("{} key(s) deleted", ok_count(&ask(&socket, &format!("DELETE {pattern}"))?));
        }
        Command::DeleteVolatile => println!("{} key(s) deleted", ok_count(&ask(&socket, "DELETE-VOLATILE")?)),
        Command::Update { key, delta, flag: f } => {
            println!("{}", ok_count(&ask(&socket, &format!("UPDATE {key} {delta} {}", flag(f)?))?));
        }
        Command::Set { key, value, flag: f } => {
            println!("{}", ok_count(&ask(&socket, &format!("SET {key} {value} {}", flag(f)?))?));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mmstat: {e:#}");
            ExitCode::FAILURE
        }
    }
}
