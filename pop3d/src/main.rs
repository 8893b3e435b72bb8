//! `mmpop3d`: see `common::daemon` for the life of the process.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// mmmail's POP3 server: legacy mail clients fetch and delete their mail.
#[derive(Parser)]
#[command(name = "mmpop3d", version)]
struct Args {
    /// Configuration file.
    #[arg(short = 'c', long = "config", default_value = "/etc/mmmail/mmpop3d.toml")]
    config: PathBuf,
    /// Check the configuration (and the TLS files it names), print the result, exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::daemon::main::<pop3d::Server>(&args.config, args.check_config)
}
