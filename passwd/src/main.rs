//! `mmpasswd`: makes password hashes for mmmail's `user.user_passwd` column and can set
//! them in the database (spec/mail.md §6, design.md "Schema").
//!
//! The password comes from the terminal (asked twice, no echo), or one line of standard
//! input (`--stdin`, or whenever standard input is not a terminal). mmmail's form
//! `mmpasswd PASSWORD` still works but warns: arguments are visible to other users.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;

/// Print or set mmmail password hashes.
#[derive(Parser, Debug)]
#[command(name = "mmpasswd", version, about)]
struct Args {
    /// Read the password from one line of standard input (a trailing CR LF or LF is removed).
    #[arg(long)]
    stdin: bool,
    /// Print mmmail's legacy unsalted MD5 form (32 hex digits) instead of Argon2id.
    #[arg(long)]
    md5: bool,
    /// A daemon configuration file whose [database] section names the database.
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Set this user's password (user.user_name) in the database instead of printing it.
    #[arg(short = 'u', long = "user", requires = "config")]
    user: Option<String>,
    /// The password (mmmail's old form; visible to other users, so avoid it).
    password: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mmpasswd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.md5 && args.user.is_some() {
        bail!("--md5 only prints legacy hashes; the database gets Argon2id hashes");
    }
    let password = read_password(&args)?;
    if password.is_empty() {
        bail!("empty password");
    }
    let hash = if args.md5 {
        common::password::legacy_md5(password.as_bytes())
    } else {
        common::password::hash(password.as_bytes())?
    };
    match (&args.user, &args.config) {
        (Some(user), Some(config)) => set_in_database(config, user, &hash),
        _ => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{hash}")?;
            Ok(())
        }
    }
}

fn read_password(args: &Args) -> anyhow::Result<String> {
    if let Some(p) = &args.password {
        eprintln!(
            "mmpasswd: warning: a password given as an argument is visible to other users \
             (ps, shell history); prefer the prompt or --stdin"
        );
        return Ok(p.clone());
    }
    common::password::read_new(args.stdin).context("reading the password")
}

fn set_in_database(config: &std::path::Path, user: &str, hash: &str) -> anyhow::Result<()> {
    let db = common::config::load_database(config)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let store = common::Store::prepare(&db).await.context("opening the database")?;
        let r = store.set_user_password(user, hash).await;
        store.close().await;
        match r {
            Ok(()) => {
                eprintln!("mmpasswd: password of user {user:?} set");
                Ok(())
            }
            Err(common::StoreError::NotFound) => bail!("no user named {user:?} in the user table"),
            Err(e) => Err(e.into()),
        }
    })
}
