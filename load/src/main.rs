//! `mmtmtpd-load`: mnm's simulation over TCP+TLS against a TMTP server (see
//! `tmtp_load`); prints its figures, exits 1 if a delivery was missing or unexpected.

use std::process::ExitCode;

use clap::Parser;

/// Load generator for a TMTP server (open registration needed: [tmtpd] auth = 0).
#[derive(Parser)]
#[command(name = "mmtmtpd-load", version)]
struct Args {
    /// Server address (TMTP over TLS).
    #[arg(long, default_value = "127.0.0.1:443")]
    addr: std::net::SocketAddr,
    /// PEM certificate (or CA) to trust.
    #[arg(long)]
    ca: std::path::PathBuf,
    /// TLS server name.
    #[arg(long, default_value = "localhost")]
    name: String,
    /// Simulated clients.
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// Session cycles per client.
    #[arg(long, default_value_t = 2)]
    cycles: usize,
    /// Multiplies mnm's 1-30 s pauses (0 = none, 1 = mnm's).
    #[arg(long, default_value_t = 0.0)]
    sleep_scale: f64,
    /// mnm's 2017 size table (mean 7 kB) instead of the current one (mean 29 kB).
    #[arg(long)]
    sizes_2017: bool,
    /// The server's pid, to report its peak RSS.
    #[arg(long)]
    server_pid: Option<u32>,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let sizes = if a.sizes_2017 {
        vec![50, 50, 50, 500, 500, 1500, 2000, 5000, 10000, 50000]
    } else {
        tmtp_load::MNM_SIZES.to_vec()
    };
    let opts = tmtp_load::Options {
        addr: a.addr,
        ca: a.ca,
        server_name: a.name,
        clients: a.clients,
        cycles: a.cycles,
        sleep_scale: a.sleep_scale,
        sizes,
        server_pid: a.server_pid,
        tag: common::random_hex(4),
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mmtmtpd-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(tmtp_load::run(opts)) {
        Ok(report) => {
            println!("{report}");
            if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("mmtmtpd-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
