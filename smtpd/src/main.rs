//! `mmsmtpd`: see `common::daemon` for the life of the process.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// mmmail's inbound ESMTP server: stores mail for local boxes in SQL.
#[derive(Parser)]
#[command(name = "mmsmtpd", version)]
struct Args {
    /// Configuration file.
    #[arg(short = 'c', long = "config", default_value = "/etc/mmmail/mmsmtpd.toml")]
    config: PathBuf,
    /// Check the configuration (and the TLS files it names), print the result, exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::daemon::main::<smtpd::Server>(&args.config, args.check_config)
}
