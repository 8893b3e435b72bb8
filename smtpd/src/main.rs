//! `mmsmtpd`: see `common::daemon` for the life of the process.

use clap::Parser;

/// mmmail's inbound ESMTP server: stores mail for local boxes in SQL.
#[derive(Parser)]
#[command(name = "mmsmtpd", version)]
struct Cli {
    #[command(flatten)]
    daemon: common::daemon::Args,
}

fn main() -> std::process::ExitCode {
    common::daemon::main::<smtpd::Server>(&Cli::parse().daemon)
}
