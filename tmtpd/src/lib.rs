//! mmtmtpd: the TMTP server of mmmail, compatible with mnm's clients and test suite
//! (spec/tmtp.md), storing accounts, groups and queued messages in the shared SQL
//! database.
//!
//! Layers (style.md P1): [`proto`] frames, headers and the server's JSON (pure);
//! [`session`] what each request does, with the group operations in [`groups`];
//! [`queue`] delivery to one node; [`conn`] the I/O; [`hub`] what connections share;
//! [`admin`] the administrator's commands (`mmtmtpd admin`). The load generator is the
//! `tmtp-load` package (`mmtmtpd-load`).

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod conn;
pub mod frames;
pub mod groups;
pub mod hub;
pub mod node_hashes;
pub mod oidc;
pub mod proto;
pub mod queue;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use common::daemon::{Core, Daemon, Live, load_tls};
use common::net::listener::Listener;
use common::net::shaping::Shaper;
use common::shutdown::Shutdown;
use common::stats::Stats;
use common::store::Store;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, TmtpdConfig};
use crate::hub::{Hub, Settings};

/// A running mmtmtpd: the shared [`Core`], whose sessions share the [`Hub`].
pub struct Server {
    core: Core<Hub>,
}

fn live(cfg: &Config, hub: Arc<Hub>, tls: Option<TlsAcceptor>) -> Live<Hub> {
    Live { settings: hub, limits: cfg.limits.clone(), tls, shaper: Shaper::new(&cfg.shaping), bans: cfg.bans.clone() }
}

/// The daemon settings from a validated config.
///
/// # Errors
/// An `authby` list that does not process (already refused by validation).
pub fn settings(cfg: &Config) -> anyhow::Result<Settings> {
    let t = &cfg.own;
    Ok(Settings {
        name: if t.name.is_empty() { cfg.server.name.clone() } else { t.name.clone() },
        auth: t.auth().map_err(anyhow::Error::msg)?,
        login_timeout: Duration::from_secs(t.login_timeout),
        idle_timeout: Duration::from_secs(t.idle_timeout),
        ack_timeout: Duration::from_secs(t.ack_timeout),
        max_nodes: t.max_nodes,
        link_lease: Duration::from_secs(t.link_lease),
        wake_poll: Duration::from_millis(t.wake_poll),
        instance: if t.instance.is_empty() { instance_name(cfg) } else { t.instance.clone() },
    })
}

/// The default instance name: the host name and the listen addresses, at most 64 bytes
/// (the addresses tell apart instances on one host; the host name, hosts).
fn instance_name(cfg: &Config) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let addrs: Vec<String> =
        cfg.listen.tls_addresses.iter().chain(&cfg.listen.addresses).map(ToString::to_string).collect();
    let mut name = format!("{}/{}", host.trim(), addrs.join(","));
    if name.len() > 64 {
        let mut end = 64;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

impl Server {
    /// The shared state (tests inspect it).
    pub fn hub(&self) -> Arc<Hub> {
        self.core.live().settings.clone()
    }
}

impl Daemon for Server {
    type Section = TmtpdConfig;
    const NAME: &'static str = "mmtmtpd";

    /// Removes uploads a crash cut off, continues the message ids, loads the OpenID
    /// Connect keys.
    async fn start(cfg: &Config, store: Store, tls: Option<TlsAcceptor>, stats: Stats) -> anyhow::Result<Arc<Self>> {
        let cut = store.tmtp_cleanup().await?;
        if cut > 0 {
            tracing::info!(messages = cut, "removed uploads cut off by a stop");
        }
        let last = u64::try_from(store.tmtp_max_message_id().await?).unwrap_or(0);
        let settings = settings(cfg)?;
        let oidc = oidc::Verifier::load(&settings.auth.providers).await;
        let hub = Hub::new(store.clone(), settings, stats.clone(), oidc, last);
        let core = Core::new(store, live(cfg, hub, tls), cfg.own.idle_timeout, stats);
        Ok(Arc::new(Server { core }))
    }

    /// Serves TMTP until `shutdown` is cancelled. The server never speaks first, so a
    /// refused connection is just closed.
    async fn serve(self: Arc<Self>, listeners: Vec<Listener>, shutdown: Shutdown) {
        // Leases and other instances' work: ends with the listeners, before the drain.
        let sharing = tokio::spawn(hub::share(self.hub(), shutdown.token.clone()));
        // The nodes' queues, the link releases and the ohi writers end with their links,
        // and the acks received are committed after them: the drain waits for this as
        // for the connections. It is tracked from the start, so that a stop when no
        // connection is left cannot close the database before it.
        let (hub, token) = (self.hub(), shutdown.token.clone());
        shutdown.tracker.spawn(async move {
            token.cancelled().await;
            let _ = sharing.await;
            hub.tasks.close();
            hub.tasks.wait().await;
            hub.flush_acks(Duration::from_secs(10)).await;
        });
        self.core
            .accept(listeners, None, shutdown, |stream, peer, implicit_tls, ctx| async move {
                conn::serve(stream, peer, &ctx, implicit_tls).await
            })
            .await;
    }

    /// New TLS files, `[limits]` and `[shaping]` for new connections (SIGHUP); the rest
    /// of `[tmtpd]` needs a restart.
    fn reload(&self, cfg: &Config) -> anyhow::Result<()> {
        self.core.replace(live(cfg, self.hub(), load_tls(cfg.tls.as_ref())?));
        Ok(())
    }
}
