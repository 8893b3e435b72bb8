//! `mmtmtpd`: see `common::daemon` for the life of the process; `mmtmtpd admin …` creates
//! accounts, nodes, aliases and group members directly in the database (what mnm's test
//! suite installs as fixtures, spec/tmtp.md §13.2).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mmmail's TMTP server (mnm's members-only store-and-forward protocol).
#[derive(Parser)]
#[command(name = "mmtmtpd", version)]
struct Args {
    /// Configuration file.
    #[arg(short = 'c', long = "config", default_value = "/etc/mmmail/mmtmtpd.toml", global = true)]
    config: PathBuf,
    /// Check the configuration (and the TLS files it names), print the result, exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    admin: Option<Admin>,
}

#[derive(Subcommand)]
enum Admin {
    /// Administration in the database of the configuration (the daemon may be running).
    #[command(subcommand)]
    Admin(tmtpd::admin::Task),
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.admin {
        None => common::daemon::main::<tmtpd::Server>(&args.config, args.check_config),
        Some(Admin::Admin(task)) => match admin(&args.config, task) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mmtmtpd: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn admin(path: &std::path::Path, task: tmtpd::admin::Task) -> anyhow::Result<()> {
    let db = common::config::load_database(path)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let store = common::Store::prepare(&db).await?;
        tmtpd::admin::run(&store, task).await
    })
}
