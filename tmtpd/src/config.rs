//! `mmtmtpd.toml`: the shared sections of `common::config` plus `[tmtpd]` (spec/tmtp.md
//! §11: `name`, `auth`, `authby` with mnm's meanings). `etc/mmtmtpd.toml` documents every
//! key.

use common::config::{Problems, Section, Shared};
use serde::Deserialize;

/// The whole file: the shared sections of `common::config` and `[tmtpd]`. `[listen]`
/// `tls_addresses` for TMTP over TLS (what clients expect); plain `addresses` only for
/// loopback or behind a TLS terminator.
pub type Config = common::config::DaemonFile<TmtpdConfig>;

/// One OpenID Connect provider (spec/tmtp.md §11.2 `authby[i]`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Shown to users.
    #[serde(default)]
    pub label: String,
    /// Login URL, then `name=value` parameters. Absent on the first entry = "OIDC
    /// optional" marker.
    pub login: Option<Vec<String>>,
    /// Token URL, then parameters.
    #[serde(default)]
    pub token: Vec<String>,
    /// Parameters appended to both.
    #[serde(default)]
    pub std: Vec<String>,
    /// JWKS URL (`http://` or `https://`) or file path (`/…`) of the provider's keys.
    #[serde(default)]
    pub keys: String,
    /// Expected `iss` claim.
    #[serde(default)]
    pub iss: String,
    /// Expected `aud` claim.
    #[serde(default)]
    pub aud: String,
}

/// `[tmtpd]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TmtpdConfig {
    /// Returned as `tmtprev.name`; default `[server] name`.
    #[serde(default)]
    pub name: String,
    /// 0 none, 1 an OpenID Connect `id_token` is required to Register, 2 advertised as
    /// "registration and login" (login is not authenticated; as mnm).
    #[serde(default)]
    pub auth: u8,
    /// The providers, at most 26.
    #[serde(default)]
    pub authby: Vec<Provider>,
    /// Seconds from accept to a completed TmtpRev and Login/Register.
    #[serde(default = "default_login_timeout")]
    pub login_timeout: u64,
    /// Seconds of client silence after login before the link is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: u64,
    /// Seconds a queued message waits for its Ack before it is sent again.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: u64,
    /// Live nodes (devices) a user may have.
    #[serde(default = "default_max_nodes")]
    pub max_nodes: i64,
    /// Seconds a connected node's link is held for this instance in the database without
    /// a renewal (renewed every third of it): how long the nodes of an instance that died
    /// stay "already connected" for the other instances on the database (issue 19).
    #[serde(default = "default_link_lease")]
    pub link_lease: u64,
    /// Milliseconds between looks for work other instances left (a message for a node
    /// connected here, an `ohi` note) on MySQL/MariaDB and SQLite; PostgreSQL is woken at
    /// once by `LISTEN/NOTIFY` and looks every 5 s besides.
    #[serde(default = "default_wake_poll")]
    pub wake_poll: u64,
    /// This instance's name in the database among instances sharing it (at most 64
    /// bytes). It must differ between instances and stay the same across restarts, so
    /// that a restarted instance takes its nodes' links back at once. Empty (default):
    /// the host name and the listen addresses.
    #[serde(default)]
    pub instance: String,
}

fn default_login_timeout() -> u64 {
    5
}
fn default_idle_timeout() -> u64 {
    120
}
fn default_ack_timeout() -> u64 {
    30
}
fn default_max_nodes() -> i64 {
    100
}
fn default_link_lease() -> u64 {
    30
}
fn default_wake_poll() -> u64 {
    500
}

impl Default for TmtpdConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            auth: 0,
            authby: Vec::new(),
            login_timeout: default_login_timeout(),
            idle_timeout: default_idle_timeout(),
            ack_timeout: default_ack_timeout(),
            max_nodes: default_max_nodes(),
            link_lease: default_link_lease(),
            wake_poll: default_wake_poll(),
            instance: String::new(),
        }
    }
}

/// What `authby` means once processed (spec/tmtp.md §11.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    /// The advertised auth type (0: not advertised).
    pub kind: u8,
    /// Whether Register needs a token even without `oidc`.
    pub required: bool,
    /// The providers, with `login`/`token` as advertised: `[URL, params joined by &]`.
    pub providers: Vec<Provider>,
}

impl TmtpdConfig {
    /// Processes `authby` as mnm does at start.
    ///
    /// # Errors
    /// mnm's messages: too many entries, a missing label, missing URL/params.
    pub fn auth(&self) -> Result<Auth, String> {
        if self.authby.len() > 26 {
            return Err("too many authentication services (max 26)".into());
        }
        let mut list = self.authby.clone();
        let mut optional = false;
        if list.first().is_some_and(|p| p.login.is_none()) {
            list.remove(0);
            optional = true;
        }
        let mut providers = Vec::new();
        for (i, p) in list.into_iter().enumerate() {
            if p.label.is_empty() {
                return Err(format!("missing label for authby[{i}]"));
            }
            let joined = |parts: &[String]| -> Result<Vec<String>, String> {
                let (url, params) = parts.split_first().ok_or_else(|| format!("missing URL/params for {}", p.label))?;
                let params: Vec<&str> = params.iter().chain(p.std.iter()).map(String::as_str).collect();
                if url.is_empty() || params.is_empty() {
                    return Err(format!("missing URL/params for {}", p.label));
                }
                Ok(vec![url.clone(), params.join("&")])
            };
            let login = joined(p.login.as_deref().unwrap_or_default())?;
            let token = joined(&p.token)?;
            providers.push(Provider { login: Some(login), token, ..p });
        }
        if self.authby.is_empty() {
            return Ok(Auth::default());
        }
        // auth 0 is open: a token is checked only when a client sends one. (mnm still
        // demanded one when providers were listed, spec §11.2; that contradicts "open".)
        Ok(Auth { kind: self.auth, required: self.auth != 0 && !optional, providers })
    }
}

impl Section for TmtpdConfig {
    const NAME: &'static str = "tmtpd";
    type Extra = ();

    fn validate(&self, _shared: &Shared, p: &mut Problems) {
        let t = self;
        if t.auth > 2 {
            p.add("tmtpd.auth", "must be 0, 1 or 2");
        }
        if let Err(e) = t.auth() {
            p.add("tmtpd.authby", e);
        }
        for (key, v) in
            [("login_timeout", t.login_timeout), ("idle_timeout", t.idle_timeout), ("ack_timeout", t.ack_timeout)]
        {
            if v == 0 {
                p.add(&format!("tmtpd.{key}"), "must be at least 1 second");
            }
        }
        if !(1..=1000).contains(&t.max_nodes) {
            p.add("tmtpd.max_nodes", "must be 1 to 1000");
        }
        if !(3..=3600).contains(&t.link_lease) {
            p.add("tmtpd.link_lease", "must be 3 to 3600 seconds");
        }
        if !(10..=60_000).contains(&t.wake_poll) {
            p.add("tmtpd.wake_poll", "must be 10 to 60000 milliseconds");
        }
        if t.instance.len() > 64 {
            p.add("tmtpd.instance", "must be at most 64 bytes");
        }
    }
}
