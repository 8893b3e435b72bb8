//! `mmtmtpd admin …`: accounts, nodes, aliases and group members made directly in the
//! database (what mnm's test suite installs as fixtures, spec/tmtp.md §13.2). The daemon
//! may be running meanwhile.

use common::store::{AddAlias, AddNode, Member, MemberStatus, Store};

use crate::session::{MAX_NAME, is_uid_text, new_node_secret, new_uid, printable};

/// Live nodes an account may have when made here.
const MAX_ADMIN_NODES: i64 = 1000;

/// A group member's standing as the command line names it.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Status {
    /// Invited, not joined yet.
    Invited,
    /// A member.
    Joined,
    /// Removed.
    Barred,
}

impl From<Status> for MemberStatus {
    fn from(s: Status) -> MemberStatus {
        match s {
            Status::Invited => MemberStatus::Invited,
            Status::Joined => MemberStatus::Joined,
            Status::Barred => MemberStatus::Barred,
        }
    }
}

/// An administrator's change (the `admin` subcommands).
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Task {
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
        /// Its standing.
        #[arg(value_enum)]
        status: Status,
    },
}

async fn add_node(store: &Store, uid: &str) -> anyhow::Result<String> {
    let (nodeid, hash) = new_node_secret().await?;
    match store.tmtp_add_node(uid, &hash, 1, MAX_ADMIN_NODES).await? {
        AddNode::Added(_) => Ok(nodeid),
        AddNode::TooMany => anyhow::bail!("account {uid} has {MAX_ADMIN_NODES} nodes already"),
    }
}

/// Runs `task`, printing uids and node secrets on standard output.
///
/// # Errors
/// Invalid names, unknown accounts, taken aliases, no randomness, database failures.
pub async fn run(store: &Store, task: Task) -> anyhow::Result<()> {
    match task {
        Task::AddUser { uid, nodes } => {
            let uid = match uid {
                Some(u) => u,
                None => new_uid()?,
            };
            anyhow::ensure!(is_uid_text(&uid), "a uid is 1-64 letters, digits, '+' or '%'");
            anyhow::ensure!(nodes >= 1, "an account needs a node");
            let (nodeid, hash) = new_node_secret().await?;
            store.tmtp_register(&uid, &hash, None).await?;
            println!("{uid}");
            println!("{nodeid}");
            for _ in 1..nodes {
                println!("{}", add_node(store, &uid).await?);
            }
        }
        Task::AddNode { uid } => {
            anyhow::ensure!(store.tmtp_user_exists(&uid).await?, "no account {uid}");
            println!("{}", add_node(store, &uid).await?);
        }
        Task::AddAlias { alias, uid } => {
            anyhow::ensure!(store.tmtp_user_exists(&uid).await?, "no account {uid}");
            anyhow::ensure!(
                !alias.is_empty() && alias.len() <= MAX_NAME && printable(&alias),
                "invalid alias {alias:?}"
            );
            match store.tmtp_add_alias(&uid, &alias).await? {
                AddAlias::Added => {}
                AddAlias::Taken => anyhow::bail!("alias {alias} already taken"),
                AddAlias::NotAvailable => anyhow::bail!("alias {alias} not available (a group has that id)"),
            }
        }
        Task::SetMember { gid, uid, alias, status } => {
            anyhow::ensure!(store.tmtp_user_exists(&uid).await?, "no account {uid}");
            anyhow::ensure!(!gid.is_empty() && gid.len() <= MAX_NAME && printable(&gid), "invalid gid {gid:?}");
            anyhow::ensure!(store.tmtp_alias_owner(&gid).await?.is_none(), "gid {gid} is an alias");
            store.tmtp_set_members(&gid, &[Member { uid, alias, status: status.into() }]).await?;
        }
    }
    Ok(())
}
