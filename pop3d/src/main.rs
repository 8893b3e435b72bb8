//! `mmpop3d`: see `common::daemon` for the life of the process.

use clap::Parser;

/// mmmail's POP3 server: legacy mail clients fetch and delete their mail.
#[derive(Parser)]
#[command(name = "mmpop3d", version)]
struct Cli {
    #[command(flatten)]
    daemon: common::daemon::Args,
}

fn main() -> std::process::ExitCode {
    common::daemon::main::<pop3d::Server>(&Cli::parse().daemon)
}
