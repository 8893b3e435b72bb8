//! `mmtmtpd`: see `common::daemon` for the life of the process; `mmtmtpd admin …` makes
//! accounts, nodes, aliases and group members directly in the database (see
//! [`tmtpd::admin`]).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mmmail's TMTP server (mnm's members-only store-and-forward protocol).
#[derive(Parser)]
#[command(name = "mmtmtpd", version)]
struct Cli {
    #[command(flatten)]
    daemon: common::daemon::Args,
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
    let cli = Cli::parse();
    match cli.admin {
        None => common::daemon::main::<tmtpd::Server>(&cli.daemon),
        Some(Admin::Admin(task)) => match admin(&cli.daemon.config_path("mmtmtpd"), task) {
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
