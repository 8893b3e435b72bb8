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
    Admin(Task),
}

#[derive(Subcommand)]
enum Task {
    /// Creates an account; prints its uid, then one node secret per line.
    AddUser {
        /// The uid (default: a new random one); letters, digits, `+` and `%`.
        uid: Option<String>,
        /// Nodes (devices) to create.
        #[arg(long, default_value_t = 1)]
        nodes: u32,
    },
    /// Adds a node to an account; prints its secret.
    AddNode {
        /// The account.
        uid: String,
    },
    /// Gives an alias to an account (no minimum length here).
    AddAlias {
        /// The alias.
        alias: String,
        /// The account.
        uid: String,
    },
    /// Sets a group member (creating the group).
    SetMember {
        /// The group id.
        gid: String,
        /// The member's account.
        uid: String,
        /// The alias recorded for the member.
        alias: String,
        /// invited, joined or barred.
        status: String,
    },
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

fn admin(path: &std::path::Path, task: Task) -> anyhow::Result<()> {
    let db = common::config::load_database(path)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let store = common::Store::prepare(&db).await?;
        tmtpd::session::admin(&store, task.into_request()).await
    })
}

impl Task {
    fn into_request(self) -> tmtpd::session::AdminRequest {
        use tmtpd::session::AdminRequest as R;
        match self {
            Task::AddUser { uid, nodes } => R::AddUser { uid, nodes },
            Task::AddNode { uid } => R::AddNode { uid },
            Task::AddAlias { alias, uid } => R::AddAlias { alias, uid },
            Task::SetMember { gid, uid, alias, status } => R::SetMember { gid, uid, alias, status },
        }
    }
}
