//! mmsmtpd: the inbound ESMTP server of mmmail. Accepts mail for local boxes only (no
//! relaying, no AUTH) and stores it in the shared SQL database (design.md, spec/mail.md
//! §3).
//!
//! Layers (style.md P1): [`proto`] parses and formats (pure), [`session`] decides (no
//! sockets), [`conn`] does the I/O; [`Server`] admits connections and holds what SIGHUP
//! may replace.

#![forbid(unsafe_code)]

pub mod checks;
pub mod config;
pub mod conn;
pub mod flood;
pub mod proto;
pub mod session;
pub mod spool;

use std::sync::Arc;

use common::daemon::{Core, Daemon, Live, load_tls};
use common::error::StoreError;
use common::net::gate::Gate;
use common::net::listener::{Listener, Refusals};
use common::net::shaping::Shaper;
use common::shutdown::Shutdown;
use common::stats::Stats;
use common::store::{Resolution, Store};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, SmtpdConfig};
use crate::proto::reply::Reply;
use crate::session::{Kept, Settings};

/// A running mmsmtpd: the shared [`Core`] and what survives reloads ([`Kept`]).
pub struct Server {
    core: Core<Settings>,
    kept: Kept,
}

fn live(cfg: &Config, kept: &Kept, tls: Option<TlsAcceptor>, stats: &Stats) -> anyhow::Result<Live<Settings>> {
    Ok(Live {
        settings: Arc::new(Settings::with_kept(cfg, kept, stats.clone())?),
        limits: cfg.limits.clone(),
        tls,
        shaper: Shaper::new(&cfg.shaping),
        bans: cfg.bans.clone(),
    })
}

impl Server {
    /// The admission gate (to inspect its state).
    pub fn gate(&self) -> &Arc<Gate> {
        self.core.gate()
    }
}

impl Daemon for Server {
    type Section = SmtpdConfig;
    const NAME: &'static str = "mmsmtpd";

    /// `/etc/resolv.conf`, read before a `chroot` can hide it (when `[dns] servers` is
    /// empty and a check needs DNS).
    fn before_privileges(cfg: &Config) -> anyhow::Result<()> {
        checks::read_resolv_conf(&cfg.extra)
    }

    async fn start(cfg: &Config, store: Store, tls: Option<TlsAcceptor>, stats: Stats) -> anyhow::Result<Arc<Self>> {
        match Self::check(cfg, &store).await {
            Ok(problems) => problems.iter().for_each(|p| tracing::warn!("{p}")),
            Err(e) => tracing::warn!(cause = %e, "postmaster box not checked"),
        }
        let kept = Kept::new(&cfg.own);
        let core = Core::new(store, live(cfg, &kept, tls, &stats)?, config::DEFAULT_INPUT_TIMEOUT, stats);
        Ok(Arc::new(Server { core, kept }))
    }

    /// Serves SMTP on `listeners` until `shutdown` is cancelled; returns once every
    /// accept loop has stopped (the connections drain through [`Shutdown::drain`]).
    async fn serve(self: Arc<Self>, listeners: Vec<Listener>, shutdown: Shutdown) {
        let name = self.core.live().settings.name.clone();
        let refusals = Refusals::new(|text| Reply::new(421, format!("4.7.0 {name} {text}")).to_bytes());
        self.core
            .accept(listeners, Some(refusals), shutdown, |stream, peer, implicit_tls, ctx| async move {
                conn::serve(stream, peer, &ctx, implicit_tls).await
            })
            .await;
    }

    /// Takes a new configuration (SIGHUP): TLS files, `[limits]`, `[shaping]` and
    /// `[smtpd]` apply to new connections; open ones go on unchanged. Listeners, the
    /// database and privileges need a restart.
    fn reload(&self, cfg: &Config) -> anyhow::Result<()> {
        self.core.replace(live(cfg, &self.kept, load_tls(cfg.tls.as_ref())?, self.core.stats())?);
        Ok(())
    }

    /// RFC 5321 §4.5.1: mail to postmaster must be deliverable, so the postmaster box
    /// (`[smtpd] postmaster`, or `postmaster@<server.name>`) must reach a box.
    async fn check(cfg: &Config, store: &Store) -> Result<Vec<String>, StoreError> {
        let Some(postmaster) = cfg.own.postmaster(&cfg.server.name) else {
            return Ok(Vec::new()); // reported by the config validation
        };
        Ok(match store.resolve(&postmaster).await? {
            Resolution::Boxes(_) => Vec::new(),
            _ => vec![format!(
                "smtpd.postmaster: {postmaster} reaches no box, so mail to postmaster (RFC 5321 4.5.1) would be \
                 refused: add that box or alias, or name an existing box"
            )],
        })
    }
}
