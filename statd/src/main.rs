//! `mmstatd`: receives counter updates from the mmmail daemons, keeps them durable,
//! answers `mmstat`, and serves them to Prometheus. Its process life is the one every
//! daemon shares (`common::daemon`): sockets bound as root, privileges dropped before any
//! thread starts, then the runtime; SIGTERM/SIGINT save a last snapshot and exit.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use statd::config::Config;

/// mmmail's counters daemon.
#[derive(Parser)]
#[command(name = "mmstatd", version)]
struct Cli {
    #[command(flatten)]
    daemon: common::daemon::Args,
}

fn main() -> ExitCode {
    let args = Cli::parse().daemon;
    common::daemon::front("mmstatd", &args, common::config::load::<Config>, check, |c| &c.log, life)
}

/// `--check-config` beyond the file's keys: the state directory, made at start as root
/// for the `[privileges]` user, must be writable by that user when it exists already.
fn check(_path: &Path, cfg: &Config, _offline: bool) -> common::daemon::Checked {
    let mut checked = common::daemon::Checked::default();
    let dir = &cfg.statd.dir;
    if dir.exists()
        && let Some(who) = cfg.privileges.identity()
        && let Err(reason) = who.may(dir, common::privileges::Access::ReadWrite)
    {
        checked.problems.push(format!("statd.dir: {reason}: the counters could not be saved"));
    }
    checked
}

fn life(path: &Path, cfg: Config) -> anyhow::Result<()> {
    let cfg = &cfg;
    common::daemon::process(
        path,
        &cfg.privileges,
        || statd::server::bind(cfg),
        |sockets| async move {
            let result = async {
                let state = statd::server::recover(&cfg.statd)?;
                let token = tokio_util::sync::CancellationToken::new();
                let mut serving = Box::pin(statd::server::serve(cfg.statd.clone(), &sockets, state, token.clone()));
                let nothing =
                    || tracing::info!("SIGHUP: mmstatd has nothing to reload; restart it to apply a new configuration");
                match common::daemon::until_stopped(&mut serving, nothing).await? {
                    Some(ended) => ended,
                    None => {
                        tracing::info!("shutting down");
                        token.cancel();
                        serving.await
                    }
                }
            }
            .await;
            sockets.remove_files();
            result
        },
    )
}
