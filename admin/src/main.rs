//! `mmadmin`: the administrator's tool beside `mmpasswd` (design.md "Schema"). Adds,
//! lists and deletes users, boxes, aliases and `nofrom` rows on whichever backend the
//! daemons' configuration names, and checks what the plain-SQL route (still documented
//! and supported) can leave behind. Box addresses and alias patterns are stored in
//! lowercase, as the mail rules look them up; passwords come from the terminal or
//! standard input, never from the command line.

mod size;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use common::address::Address;
use common::{Store, StoreError};

/// Manage the users, boxes, aliases and nofrom rows of the mmmail database.
#[derive(Parser, Debug)]
#[command(name = "mmadmin", version, about)]
struct Cli {
    /// A daemon configuration file whose [database] section names the database.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "/etc/mmmail/mmsmtpd.toml",
        global = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Users: the owners of boxes, with the password their boxes log in with.
    #[command(subcommand)]
    User(UserCmd),
    /// Boxes: where mail is stored, with their limits.
    #[command(subcommand, name = "box")]
    Box(BoxCmd),
    /// Aliases: address patterns (`*` any run, `?` one character) reaching a box.
    #[command(subcommand)]
    Alias(AliasCmd),
    /// Patterns of client addresses that may send `MAIL FROM:<>` when
    /// `[smtpd] null_sender = "nofrom"`.
    #[command(subcommand)]
    Nofrom(NofromCmd),
    /// Client addresses banned at connect (`[bans]`): listed, or lifted.
    #[command(subcommand)]
    Ban(BanCmd),
    /// Find what plain SQL can leave behind; exit status 1 if anything is found.
    Check {
        /// Repair, in one transaction, what can be: counters (set to a recount), message
        /// bodies no box refers to, expired POP3 leases.
        #[arg(long)]
        fix: bool,
    },
}

#[derive(Subcommand, Debug)]
enum UserCmd {
    /// Add a user; the password is asked twice (or read from standard input).
    Add {
        /// The user's name.
        name: String,
        /// Read the password from one line of standard input.
        #[arg(long)]
        stdin: bool,
    },
    /// Set a user's password.
    Passwd {
        /// The user's name.
        name: String,
        /// Read the password from one line of standard input.
        #[arg(long)]
        stdin: bool,
    },
    /// List the users and how many boxes each owns.
    List,
    /// Delete a user that owns no box.
    Del {
        /// The user's name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum BoxCmd {
    /// Add a box for a user.
    Add {
        /// The box address (stored in lowercase).
        address: String,
        /// The owning user.
        #[arg(long)]
        user: String,
        /// Largest total size: bytes, or with K, M or G (1024-based); 0 = unlimited.
        #[arg(long, value_name = "SIZE", default_value = "0", value_parser = size::parse)]
        max_size: i64,
        /// Most messages; 0 = unlimited.
        #[arg(long, value_name = "N", default_value_t = 0)]
        max_mails: i64,
    },
    /// Change a box's limits (those not given stay).
    Limits {
        /// The box address.
        address: String,
        /// Largest total size: bytes, or with K, M or G (1024-based); 0 = unlimited.
        #[arg(long, value_name = "SIZE", value_parser = size::parse)]
        max_size: Option<i64>,
        /// Most messages; 0 = unlimited.
        #[arg(long, value_name = "N")]
        max_mails: Option<i64>,
    },
    /// List the boxes with owner, usage and limits.
    List,
    /// Delete a box with its messages, its aliases and its POP3 lease.
    Del {
        /// The box address.
        address: String,
    },
}

#[derive(Subcommand, Debug)]
enum AliasCmd {
    /// Add an alias pattern reaching a box.
    Add {
        /// The pattern, such as `*@example.org` or `sales-*@example.org` (stored in
        /// lowercase).
        pattern: String,
        /// The box it reaches.
        r#box: String,
    },
    /// List the aliases.
    List,
    /// Delete an alias pattern (only its row to BOX, when given).
    Del {
        /// The pattern.
        pattern: String,
        /// The box.
        r#box: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum NofromCmd {
    /// Add a pattern (`127.0.0.1`, `192.0.2.*`, `::1`).
    Add {
        /// The pattern.
        pattern: String,
    },
    /// List the patterns.
    List,
    /// Delete a pattern.
    Del {
        /// The pattern.
        pattern: String,
    },
}

#[derive(Subcommand, Debug)]
enum BanCmd {
    /// List the bans in force: address and when each ends (UTC).
    List,
    /// Lift a ban (the daemons stop refusing the address within 5 seconds).
    Del {
        /// The address as listed (IPv6: its network address).
        address: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mmadmin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Read before the runtime starts: the terminal prompt blocks.
    let password = match &cli.what {
        What::User(UserCmd::Add { stdin, .. } | UserCmd::Passwd { stdin, .. }) => {
            let p = common::password::read_new(*stdin).context("reading the password")?;
            Some(common::password::hash(p.as_bytes())?)
        }
        _ => None,
    };
    let db = common::config::load_database(&cli.config)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let store =
            Store::prepare(&db).await.with_context(|| format!("opening the database of {}", cli.config.display()))?;
        let r = execute(&store, cli.what, password).await;
        store.close().await;
        r
    })
}

/// A box address as stored: parsed, then in the lowercase lookup form.
fn box_address(text: &str) -> anyhow::Result<String> {
    let a = Address::parse(text, true).map_err(|e| anyhow::anyhow!("{text:?} is not a mailbox: {e}"))?;
    Ok(a.key())
}

/// A name or pattern: not empty, no spaces or control characters.
fn word(what: &str, text: &str) -> anyhow::Result<String> {
    if text.is_empty() || text.len() > 255 || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("{what} {text:?}: empty, longer than 255 octets, or with spaces");
    }
    Ok(text.to_owned())
}

/// Says what a refused write means in the administrator's terms.
fn explain(e: StoreError, duplicate: String, missing: String) -> anyhow::Error {
    if e.is_duplicate() {
        anyhow::anyhow!(duplicate)
    } else if matches!(e, StoreError::NotFound) {
        anyhow::anyhow!(missing)
    } else {
        e.into()
    }
}

async fn execute(store: &Store, what: What, password: Option<String>) -> anyhow::Result<ExitCode> {
    let password = password.unwrap_or_default();
    match what {
        What::User(UserCmd::Add { name, .. }) => {
            let name = word("user name", &name)?;
            store
                .admin_add_user(&name, &password)
                .await
                .map_err(|e| explain(e, format!("user {name:?} exists"), String::new()))?;
            println!("user {name} added");
        }
        What::User(UserCmd::Passwd { name, .. }) => {
            store
                .set_user_password(&name, &password)
                .await
                .map_err(|e| explain(e, String::new(), format!("no user named {name:?}")))?;
            println!("password of user {name} set");
        }
        What::User(UserCmd::List) => {
            println!("{:<24} {:>6}", "USER", "BOXES");
            for u in store.admin_users().await? {
                println!("{:<24} {:>6}", u.name, u.boxes);
            }
        }
        What::User(UserCmd::Del { name }) => {
            match store
                .admin_delete_user(&name)
                .await
                .map_err(|e| explain(e, String::new(), format!("no user named {name:?}")))?
            {
                Ok(()) => println!("user {name} deleted"),
                Err(common::store::OwnsBoxes) => {
                    bail!("user {name:?} still owns boxes: delete them first (mmadmin box del)")
                }
            }
        }
        What::Box(BoxCmd::Add { address, user, max_size, max_mails }) => {
            let address = box_address(&address)?;
            if max_mails < 0 {
                bail!("--max-mails must be 0 or more");
            }
            store
                .admin_add_box(&address, &user, max_size, max_mails)
                .await
                .map_err(|e| explain(e, format!("box {address} exists"), format!("no user named {user:?}")))?;
            println!("box {address} added for user {user}");
        }
        What::Box(BoxCmd::Limits { address, max_size, max_mails }) => {
            let address = box_address(&address)?;
            let current = store.find_box(&address).await?.with_context(|| format!("no box {address}"))?;
            let (size, mails) = (max_size.unwrap_or(current.max_size), max_mails.unwrap_or(current.max_mails));
            if mails < 0 {
                bail!("--max-mails must be 0 or more");
            }
            store
                .admin_box_limits(&address, size, mails)
                .await
                .map_err(|e| explain(e, String::new(), format!("no box {address}")))?;
            println!("box {address}: at most {} bytes and {} messages (0 = unlimited)", size, mails);
        }
        What::Box(BoxCmd::List) => {
            println!(
                "{:<40} {:<16} {:>12} {:>12} {:>8} {:>8}",
                "BOX", "USER", "BYTES", "MAX_BYTES", "MAILS", "MAX_MAILS"
            );
            for b in store.admin_boxes().await? {
                let owner = b.owner.unwrap_or_else(|| "(none)".into());
                println!(
                    "{:<40} {:<16} {:>12} {:>12} {:>8} {:>8}",
                    b.address, owner, b.size, b.max_size, b.mails, b.max_mails
                );
            }
        }
        What::Box(BoxCmd::Del { address }) => {
            let address = box_address(&address)?;
            store
                .admin_delete_box(&address)
                .await
                .map_err(|e| explain(e, String::new(), format!("no box {address}")))?;
            println!("box {address} deleted with its messages and aliases");
        }
        What::Alias(AliasCmd::Add { pattern, r#box }) => {
            let pattern = word("pattern", &pattern)?.to_lowercase();
            let target = box_address(&r#box)?;
            store
                .admin_add_alias(&pattern, &target)
                .await
                .map_err(|e| explain(e, format!("alias {pattern} to {target} exists"), format!("no box {target}")))?;
            println!("alias {pattern} reaches {target}");
        }
        What::Alias(AliasCmd::List) => {
            println!("{:<40} BOX", "PATTERN");
            for (pattern, target) in store.admin_aliases().await? {
                println!("{pattern:<40} {target}");
            }
        }
        What::Alias(AliasCmd::Del { pattern, r#box }) => {
            let pattern = pattern.to_lowercase();
            let target = r#box.as_deref().map(box_address).transpose()?;
            match store.admin_delete_alias(&pattern, target.as_deref()).await? {
                0 => bail!("no alias {pattern}{}", target.map(|t| format!(" to {t}")).unwrap_or_default()),
                n => println!("{n} alias row(s) of {pattern} deleted"),
            }
        }
        What::Nofrom(NofromCmd::Add { pattern }) => {
            let pattern = word("pattern", &pattern)?;
            store
                .admin_add_nofrom(&pattern)
                .await
                .map_err(|e| explain(e, format!("{pattern} is listed already"), String::new()))?;
            println!("nofrom {pattern} added");
        }
        What::Nofrom(NofromCmd::List) => {
            for p in store.admin_nofrom().await? {
                println!("{p}");
            }
        }
        What::Nofrom(NofromCmd::Del { pattern }) => match store.admin_delete_nofrom(&pattern).await? {
            0 => bail!("no nofrom pattern {pattern}"),
            _ => println!("nofrom {pattern} deleted"),
        },
        What::Ban(BanCmd::List) => {
            for (address, until) in store.active_bans().await? {
                let end = time::OffsetDateTime::from_unix_timestamp(until).map_or_else(
                    |_| until.to_string(),
                    |t| t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| until.to_string()),
                );
                println!("{address:<40} until {end}");
            }
        }
        What::Ban(BanCmd::Del { address }) => {
            if !store.delete_ban(&address).await? {
                bail!("no ban of {address}");
            }
            println!("ban of {address} lifted");
        }
        What::Check { fix } => return check(store, fix).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// `mmadmin check [--fix]`: one line per finding; exit status 1 while any remains.
async fn check(store: &Store, fix: bool) -> anyhow::Result<ExitCode> {
    let found = store.admin_check().await?;
    for b in &found.mixed_case_boxes {
        println!("box {b}: not in lowercase, so it receives no mail and cannot log in (rename it in lowercase)");
    }
    for (pattern, target) in &found.dangling_aliases {
        println!("alias {pattern}: its box {target} does not exist");
    }
    for b in &found.ownerless_boxes {
        println!("box {b}: its user does not exist");
    }
    for (b, stored, counted) in &found.counter_drift {
        println!(
            "box {b}: counters say {} bytes in {} messages, its messages are {} bytes in {}",
            stored.bytes, stored.messages, counted.bytes, counted.messages
        );
    }
    if found.orphan_messages > 0 {
        println!("{} message bodies belong to no box", found.orphan_messages);
    }
    for (b, owner) in &found.stale_leases {
        println!("box {b}: POP3 lease of {owner} expired and left behind");
    }
    if found.is_clean() {
        println!("no problems found");
        return Ok(ExitCode::SUCCESS);
    }
    if !fix {
        return Ok(ExitCode::FAILURE);
    }
    let repaired = store.admin_repair(&found).await?;
    println!(
        "repaired: counters of {} box(es), {} message bodies deleted, {} lease(s) deleted",
        repaired.counters, repaired.messages, repaired.leases
    );
    let left = found.mixed_case_boxes.len() + found.dangling_aliases.len() + found.ownerless_boxes.len();
    if left > 0 {
        println!("{left} finding(s) need your decision (see above)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
