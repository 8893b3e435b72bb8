//! `mmpop3d`: load the config, prepare the database, bind, serve until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use common::shutdown::{Shutdown, signal};
use pop3d::config::{Config, MIN_INPUT_TIMEOUT};

/// mmmail's POP3 server: legacy mail clients fetch and delete their mail.
#[derive(Parser)]
#[command(name = "mmpop3d", version)]
struct Args {
    /// Configuration file.
    #[arg(short = 'c', long = "config", default_value = "/etc/mmmail/mmpop3d.toml")]
    config: PathBuf,
    /// Check the configuration (and the TLS files it names), print the result, exit.
    #[arg(long)]
    check_config: bool,
}

/// Seconds sessions get to finish after SIGTERM/SIGINT.
const GRACE: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let args = Args::parse();
    let mut cfg: Config = match common::config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mmpop3d: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.check_config {
        println!("mmpop3d: {}: configuration OK", args.config.display());
        return ExitCode::SUCCESS;
    }
    common::logging::init(&cfg.log);
    if cfg.enforce_min_input_timeout() {
        tracing::warn!("limits.input_timeout raised to {MIN_INPUT_TIMEOUT} seconds (RFC 1939 section 3)");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mmpop3d: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(Arc::new(cfg))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("mmpop3d: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cfg: Arc<Config>) -> anyhow::Result<()> {
    let store = common::Store::prepare(&cfg.database).await?;
    tracing::info!(backend = store.backend(), "database ready");
    let listeners = common::net::listener::bind(&cfg.listen.addresses, &cfg.listen.tls_addresses).await?;
    let shutdown = Shutdown::new();
    let server = tokio::spawn(pop3d::run(cfg, store.clone(), listeners, shutdown.clone()));
    tokio::select! {
        r = signal() => { r?; tracing::info!("shutting down"); }
        r = server => { r??; }
    }
    if !shutdown.drain(GRACE).await {
        tracing::warn!("sessions still open after the grace period; closing");
    }
    store.close().await;
    Ok(())
}
