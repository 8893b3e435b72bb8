//! `mmstatd`: receives counter updates from the mmmail daemons, keeps them durable,
//! answers `mmstat`, and serves them to Prometheus.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use statd::config::Config;

/// mmmail's counters daemon.
#[derive(Parser)]
#[command(name = "mmstatd", version)]
struct Args {
    /// Configuration file.
    #[arg(short = 'c', long = "config", default_value = "/etc/mmmail/mmstatd.toml")]
    config: PathBuf,
    /// Check the configuration, print the result, exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg: Config = match common::config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mmstatd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.check_config {
        println!("mmstatd: {}: configuration OK", args.config.display());
        return ExitCode::SUCCESS;
    }
    common::logging::init(&cfg.log);
    match run(&args.config, cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("mmstatd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The life of the process, as common::daemon does it for the network daemons: lock and
/// pid file, sockets bound as root, privileges dropped before any thread starts, then
/// the runtime; SIGTERM/SIGINT save a last snapshot and exit.
fn run(path: &Path, cfg: Config) -> anyhow::Result<()> {
    let _instance = common::privileges::claim(path, &cfg.privileges)?;
    let sockets = statd::server::bind(&cfg)?;
    let who = common::privileges::drop_root(&cfg.privileges)?;
    tracing::info!("{who}");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = rt.block_on(async {
        let state = statd::server::recover(&cfg.statd)?;
        let token = tokio_util::sync::CancellationToken::new();
        let serving = statd::server::serve(cfg.statd.clone(), &sockets, state, token.clone());
        tokio::pin!(serving);
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                r = &mut serving => return r,
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => tracing::info!("SIGHUP: mmstatd has nothing to reload; restart it to apply a new configuration"),
            }
        }
        tracing::info!("shutting down");
        token.cancel();
        serving.await
    });
    sockets.remove_files();
    result
}
