//! TOML configuration: the sections every network daemon shares (design.md "Config",
//! style.md P9), declared and validated once in [`Shared`]; a daemon adds only its own
//! section ([`Section`]) and its file is a [`DaemonFile`]; [`load`] reports every problem
//! at once.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, MapAccess, Visitor};

use crate::error::ConfigError;
use crate::net::shaping::ShapingConfig;
use crate::privileges::PrivilegesConfig;
use crate::stats::StatsConfig;

/// A value that must never be printed (database URLs with passwords).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }
    /// The wrapped value; do not log it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Problems found while validating a config, collected so that all are shown at once.
#[derive(Debug, Default)]
pub struct Problems {
    list: Vec<String>,
    /// Whether the config file can be read by users other than its owner and group.
    pub world_readable: bool,
}

impl Problems {
    /// Records a problem with `key` (as `section.key`).
    pub fn add(&mut self, key: &str, message: impl fmt::Display) {
        self.list.push(format!("{key}: {message}"));
    }
    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Semantic checks after parsing; implementations push every problem into `problems`.
pub trait Validate {
    /// Records every unusable value.
    fn validate(&self, problems: &mut Problems);
}

/// `[server]`: who this server says it is.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Host name used in greetings, `Received:` fields and logs.
    pub name: String,
}

impl Validate for ServerConfig {
    fn validate(&self, p: &mut Problems) {
        if !crate::address::is_domain(&self.name) {
            p.add("server.name", format_args!("{:?} is not a host name", self.name));
        }
    }
}

/// `[database]`: where the shared SQL store lives.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://…`, `mysql://…` or `sqlite:///path/to/mmmail.db`.
    pub url: Secret<String>,
    /// Connection pool size (connections).
    #[serde(default = "default_pool")]
    pub max_connections: u32,
    /// Seconds to wait for a connection from the pool before a temporary failure.
    #[serde(default = "default_acquire_timeout")]
    pub acquire_timeout: u64,
    /// Run pending migrations at start (`true`), or refuse to start when the schema is
    /// behind (`false`).
    #[serde(default = "default_true")]
    pub migrate: bool,
}

fn default_pool() -> u32 {
    8
}
fn default_acquire_timeout() -> u64 {
    10
}
fn default_true() -> bool {
    true
}

impl DatabaseConfig {
    /// A config for `url` with default pool settings.
    pub fn from_url(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url.into()),
            max_connections: default_pool(),
            acquire_timeout: default_acquire_timeout(),
            migrate: true,
        }
    }

    /// Whether the URL carries a password (`user:pass@` or a `password=` parameter).
    pub fn has_password(&self) -> bool {
        let url = self.url.expose();
        let Some((_, rest)) = url.split_once("://") else {
            return false;
        };
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let userinfo_pw = authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.split_once(':').is_some_and(|(_, pw)| !pw.is_empty()));
        userinfo_pw || url.split_once('?').is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("password=")))
    }
}

impl Validate for DatabaseConfig {
    fn validate(&self, p: &mut Problems) {
        let url = self.url.expose();
        if !(url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("mysql://")
            || url.starts_with("mariadb://")
            || url.starts_with("sqlite:"))
        {
            p.add("database.url", "must start with postgres://, mysql:// or sqlite:");
        }
        if let Some(file) = crate::store::sqlite_file(url)
            && let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            p.add(
                "database.url",
                format_args!(
                    "directory {} does not exist: the database {} cannot be made",
                    dir.display(),
                    file.display()
                ),
            );
        }
        if self.max_connections == 0 {
            p.add("database.max_connections", "must be at least 1");
        }
        if self.has_password() && p.world_readable {
            p.add(
                "database.url",
                "holds a password but the file is readable by others; chmod o-r it (0640 root:mmmail)",
            );
        }
    }
}

/// `[listen]`: the sockets to accept clients on.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Plain listeners (STARTTLS/STLS offered on them when `[tls]` is set).
    #[serde(default)]
    pub addresses: Vec<SocketAddr>,
    /// Implicit-TLS listeners (need `[tls]`).
    #[serde(default)]
    pub tls_addresses: Vec<SocketAddr>,
    /// Networks of trusted proxies (HAProxy, a load balancer) in CIDR form. A client
    /// connecting from one of them must begin with a PROXY protocol header, v1 or v2
    /// (`crate::net::proxy`), and the client it names is the client for every rule,
    /// counter, log line and trace field; anyone else is served as themselves and a
    /// header from them closes the connection. Empty (default): no proxies.
    #[serde(default)]
    pub proxy_networks: Vec<ipnet::IpNet>,
    /// Length of each listener's queue of connections the kernel has completed and the
    /// daemon not yet accepted (`listen(2)`'s backlog); the kernel caps it at
    /// `net.core.somaxconn`. Unset (default): `net.core.somaxconn` itself, so that a
    /// burst of connections waits in the queue instead of overflowing it (Rust's own
    /// default is 128).
    #[serde(default)]
    pub backlog: Option<u32>,
}

impl ListenConfig {
    /// Checks the section; `tls` tells whether `[tls]` is configured.
    pub fn validate_with(&self, tls: bool, p: &mut Problems) {
        if self.addresses.is_empty() && self.tls_addresses.is_empty() {
            p.add("listen.addresses", "no listener configured");
        }
        if !self.tls_addresses.is_empty() && !tls {
            p.add("listen.tls_addresses", "implicit-TLS listeners need a [tls] section");
        }
    }
}

/// `[tls]`: certificate chain and key, PEM.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Validate for TlsConfig {
    fn validate(&self, p: &mut Problems) {
        // Each file on its own, so that a bad key is reported beside a bad certificate.
        let certs = crate::net::tls::load_certs(&self.cert).map_err(|e| p.add("tls.cert", e));
        let key = crate::net::tls::load_key(&self.key).map_err(|e| p.add("tls.key", e));
        if certs.is_ok()
            && key.is_ok()
            && let Err(e) = crate::net::tls::load_server_config(&self.cert, &self.key)
        {
            p.add("tls", e);
        }
    }
}

/// `[limits]`: per-connection limits shared by the daemons (spec/mail.md §3.2).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Maximum simultaneous client connections; one more gets a refusal line and is closed.
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    /// Seconds of client silence before the session is closed; absent means the
    /// daemon's own default (see [`LimitsConfig::input_timeout_or`]).
    #[serde(default)]
    pub input_timeout: Option<u64>,
    /// Seconds a whole session may last.
    #[serde(default = "default_session_timeout")]
    pub session_timeout: u64,
    /// Error replies after which the session is closed.
    #[serde(default = "default_max_errors")]
    pub max_errors: u32,
    /// Simultaneous connections from one address (IPv6: one `ipv6_prefix` network);
    /// 0 = unlimited.
    #[serde(default = "default_max_per_address")]
    pub max_per_address: u32,
    /// New connections one address may open per `connection_period`; 0 = unlimited.
    #[serde(default = "default_connection_rate")]
    pub connection_rate: u32,
    /// Seconds over which `connection_rate` is counted.
    #[serde(default = "default_connection_period")]
    pub connection_period: u64,
    /// IPv6 clients are counted per network of this prefix length (bits).
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// Tarpit: each error reply is delayed by this many seconds times the number of
    /// errors so far (at most 10 times); 0 = no delay.
    #[serde(default = "default_error_delay")]
    pub error_delay: u64,
    /// Seconds sessions get to finish after SIGTERM/SIGINT before they are cut.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: u64,
    /// Seconds a TLS handshake may take (implicit TLS, STARTTLS, STLS); a client that
    /// stalls it is closed then.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: u64,
    /// Stress mode begins when open connections reach this percentage of `max_clients`
    /// (`crate::net::stress`); 0 = never.
    #[serde(default = "default_stress_threshold")]
    pub stress_threshold: u8,
    /// In stress mode, seconds of silence allowed to a connection that has not logged
    /// in (every SMTP connection); when all places are taken, the one that has waited
    /// longest is closed for a new client.
    #[serde(default = "default_stress_timeout")]
    pub stress_timeout: u64,
}

fn default_max_clients() -> usize {
    128
}
fn default_max_per_address() -> u32 {
    4
}
fn default_connection_rate() -> u32 {
    10
}
fn default_connection_period() -> u64 {
    30
}
fn default_ipv6_prefix() -> u8 {
    64
}
fn default_error_delay() -> u64 {
    1
}
fn default_shutdown_grace() -> u64 {
    30
}
fn default_handshake_timeout() -> u64 {
    10
}
fn default_stress_threshold() -> u8 {
    80
}
fn default_stress_timeout() -> u64 {
    10
}
fn default_session_timeout() -> u64 {
    3600
}
fn default_max_errors() -> u32 {
    16
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_clients: default_max_clients(),
            input_timeout: None,
            session_timeout: default_session_timeout(),
            max_errors: default_max_errors(),
            max_per_address: default_max_per_address(),
            connection_rate: default_connection_rate(),
            connection_period: default_connection_period(),
            ipv6_prefix: default_ipv6_prefix(),
            error_delay: default_error_delay(),
            shutdown_grace: default_shutdown_grace(),
            handshake_timeout: default_handshake_timeout(),
            stress_threshold: default_stress_threshold(),
            stress_timeout: default_stress_timeout(),
        }
    }
}

impl LimitsConfig {
    /// Limits with every per-address check, the tarpit and rate limiting off, for tests
    /// and benchmarks that open many connections from one address.
    pub fn unlimited() -> Self {
        Self { max_per_address: 0, connection_rate: 0, error_delay: 0, ..Self::default() }
    }

    /// The tarpit delay before the `errors`-th error reply.
    pub fn tarpit(&self, errors: u32) -> std::time::Duration {
        std::time::Duration::from_secs(self.error_delay.saturating_mul(u64::from(errors.min(10))))
    }

    /// The input timeout in seconds, or `default` when the file does not set it.
    pub fn input_timeout_or(&self, default: u64) -> u64 {
        self.input_timeout.unwrap_or(default)
    }
}

impl Validate for LimitsConfig {
    fn validate(&self, p: &mut Problems) {
        if self.max_clients == 0 {
            p.add("limits.max_clients", "must be at least 1");
        }
        if self.input_timeout == Some(0) {
            p.add("limits.input_timeout", "must be at least 1 second");
        }
        if self.session_timeout < self.input_timeout.unwrap_or(0) {
            p.add("limits.session_timeout", "must not be shorter than limits.input_timeout");
        }
        if self.max_errors == 0 {
            p.add("limits.max_errors", "must be at least 1");
        }
        if self.handshake_timeout == 0 {
            p.add("limits.handshake_timeout", "must be at least 1 second");
        }
        if self.stress_threshold > 100 {
            p.add("limits.stress_threshold", "is a percentage of max_clients: 0 (off) to 100");
        }
        if self.stress_timeout == 0 {
            p.add("limits.stress_timeout", "must be at least 1 second");
        }
        if self.connection_rate > 0 && self.connection_period == 0 {
            p.add("limits.connection_period", "must be at least 1 second when connection_rate is set");
        }
        if self.ipv6_prefix == 0 || self.ipv6_prefix > 128 {
            p.add("limits.ipv6_prefix", "must be 1 to 128");
        }
    }
}

/// `[log]`: what to log.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `error`, `warn`, `info`, `debug`, `trace`, or directives such as
    /// `info,smtpd=debug`. `RUST_LOG` overrides it.
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: default_level() }
    }
}

impl Validate for LogConfig {
    fn validate(&self, p: &mut Problems) {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.level) {
            p.add("log.level", e);
        }
    }
}

/// The sections every network daemon's file has (design.md "Config"): `[server]`,
/// `[database]` and `[listen]` are required, `[tls]` optional, the rest default.
#[derive(Clone, Debug)]
pub struct Shared {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[listen]`.
    pub listen: ListenConfig,
    /// `[tls]`: when present, STARTTLS/STLS is offered and `tls_addresses` may be used.
    pub tls: Option<TlsConfig>,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[shaping]`.
    pub shaping: ShapingConfig,
    /// `[privileges]`.
    pub privileges: PrivilegesConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[stats]`: where counters go (mmstatd's socket).
    pub stats: StatsConfig,
    /// `[bans]`: addresses refused at connect after too many failures (issue 13).
    pub bans: crate::bans::BansConfig,
}

/// The names of [`Shared`]'s sections, in file order.
pub const SHARED_SECTIONS: [&str; 10] =
    ["server", "database", "listen", "tls", "limits", "shaping", "privileges", "log", "stats", "bans"];

impl Shared {
    /// Shared sections for `name` on `database` with every default: no listeners, no
    /// TLS (tests and tools).
    pub fn new(name: &str, database: DatabaseConfig) -> Shared {
        Shared {
            server: ServerConfig { name: name.to_owned() },
            database,
            listen: ListenConfig::default(),
            tls: None,
            limits: LimitsConfig::default(),
            shaping: ShapingConfig::default(),
            privileges: PrivilegesConfig::default(),
            log: LogConfig::default(),
            stats: StatsConfig::default(),
            bans: crate::bans::BansConfig::default(),
        }
    }
}

impl Validate for Shared {
    fn validate(&self, p: &mut Problems) {
        self.server.validate(p);
        self.database.validate(p);
        self.listen.validate_with(self.tls.is_some(), p);
        if let Some(tls) = &self.tls {
            tls.validate(p);
        }
        self.limits.validate(p);
        self.shaping.validate(p);
        self.privileges.validate_with(&self.database, p);
        self.log.validate(p);
        self.stats.validate(p);
        self.bans.validate(p);
    }
}

/// A daemon's own section (`[smtpd]`, `[pop3d]`, `[tmtpd]`): all a daemon adds to
/// [`Shared`]. Every key has a default, so the section may be left out.
pub trait Section: DeserializeOwned + Default + Clone + fmt::Debug + Send + Sync + 'static {
    /// The section's name in the file.
    const NAME: &'static str;
    /// Top-level sections of this daemon's own beside `[NAME]` (mmsmtpd's `[dns]`,
    /// `[checks]`, `[[dnsbl]]`, `[greylist]`); `()` for none.
    type Extra: Extra;
    /// Records every unusable value (as `name.key`); `shared` for checks that depend on
    /// other sections.
    fn validate(&self, _shared: &Shared, _problems: &mut Problems) {}
}

/// A daemon's top-level sections besides the shared ones and its own `[NAME]`, each
/// parsed by its own type (so errors keep their line and column).
pub trait Extra: Default + Clone + fmt::Debug + Send + Sync + 'static {
    /// The section names, in file order.
    const NAMES: &'static [&'static str];
    /// Parses the value of section `key` (one of [`NAMES`](Self::NAMES)) from `map`.
    ///
    /// # Errors
    /// The section's parse error.
    fn visit<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
    /// Records every unusable value (as `section.key`).
    fn validate(&self, _shared: &Shared, _problems: &mut Problems) {}
}

impl Extra for () {
    const NAMES: &'static [&'static str] = &[];
    fn visit<'de, A: MapAccess<'de>>(&mut self, key: &str, _map: &mut A) -> Result<(), A::Error> {
        Err(de::Error::custom(format_args!("no section `{key}`")))
    }
}

/// A network daemon's file: the [`Shared`] sections and its own. Unknown sections and
/// keys are errors; every section is parsed by its own type, so errors keep their line
/// and column.
#[derive(Clone, Debug)]
pub struct DaemonFile<T: Section> {
    /// The shared sections (also reached through `Deref`: `cfg.limits`).
    pub shared: Shared,
    /// The daemon's own section.
    pub own: T,
    /// The daemon's other sections of its own ([`Section::Extra`]).
    pub extra: T::Extra,
}

impl<T: Section> DaemonFile<T> {
    /// `shared` with the own sections' defaults.
    pub fn new(shared: Shared) -> Self {
        DaemonFile { shared, own: T::default(), extra: T::Extra::default() }
    }
}

impl<T: Section> std::ops::Deref for DaemonFile<T> {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl<T: Section> std::ops::DerefMut for DaemonFile<T> {
    fn deref_mut(&mut self) -> &mut Shared {
        &mut self.shared
    }
}

impl<T: Section> Validate for DaemonFile<T> {
    fn validate(&self, p: &mut Problems) {
        self.shared.validate(p);
        self.own.validate(&self.shared, p);
        self.extra.validate(&self.shared, p);
    }
}

impl<'de, T: Section> Deserialize<'de> for DaemonFile<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FileVisitor::<T>(std::marker::PhantomData))
    }
}

struct FileVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Section> Visitor<'de> for FileVisitor<T> {
    type Value = DaemonFile<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a configuration with [{}]", T::NAME)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DaemonFile<T>, A::Error> {
        let (mut server, mut database, mut listen, mut tls) = (None, None, None, None);
        let (mut limits, mut shaping, mut privileges, mut log, mut stats, mut own) =
            (None, None, None, None, None, None);
        let mut bans = None;
        let mut extra = T::Extra::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "server" => server = Some(map.next_value()?),
                "database" => database = Some(map.next_value()?),
                "listen" => listen = Some(map.next_value()?),
                "tls" => tls = Some(map.next_value()?),
                "limits" => limits = Some(map.next_value()?),
                "shaping" => shaping = Some(map.next_value()?),
                "privileges" => privileges = Some(map.next_value()?),
                "log" => log = Some(map.next_value()?),
                "stats" => stats = Some(map.next_value()?),
                "bans" => bans = Some(map.next_value()?),
                k if k == T::NAME => own = Some(map.next_value()?),
                k if T::Extra::NAMES.contains(&k) => extra.visit(k, &mut map)?,
                other => {
                    // serde's own wording: `--check-config` shows it, and the key lists
                    // of the documentation tests are read from it.
                    let expected: Vec<String> = SHARED_SECTIONS
                        .iter()
                        .chain([&T::NAME])
                        .chain(T::Extra::NAMES)
                        .map(|s| format!("`{s}`"))
                        .collect();
                    return Err(de::Error::custom(format_args!(
                        "unknown field `{other}`, expected one of {}",
                        expected.join(", ")
                    )));
                }
            }
        }
        let shared = Shared {
            server: server.ok_or_else(|| de::Error::missing_field("server"))?,
            database: database.ok_or_else(|| de::Error::missing_field("database"))?,
            listen: listen.ok_or_else(|| de::Error::missing_field("listen"))?,
            tls,
            limits: limits.unwrap_or_default(),
            shaping: shaping.unwrap_or_default(),
            privileges: privileges.unwrap_or_default(),
            log: log.unwrap_or_default(),
            stats: stats.unwrap_or_default(),
            bans: bans.unwrap_or_default(),
        };
        Ok(DaemonFile { shared, own: own.unwrap_or_default(), extra })
    }
}

/// Reads, parses and validates the config file at `path`.
///
/// # Errors
/// [`ConfigError::Read`] if unreadable, [`ConfigError::Parse`] for TOML syntax, unknown
/// keys or wrong types (with line and column), [`ConfigError::Invalid`] listing every
/// semantic problem.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    let (text, world_readable) = read(path)?;
    let value: T = parse(&text).map_err(|message| ConfigError::Parse { path: path.into(), message })?;
    let mut problems = Problems { world_readable, ..Problems::default() };
    value.validate(&mut problems);
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(ConfigError::Invalid { path: path.into(), problems: problems.list })
    }
}

/// Reads only the `[database]` section of a daemon's config file (for tools such as
/// mmpasswd that share the daemons' files but not their other sections).
///
/// # Errors
/// As [`load`]; a file without `[database]` is [`ConfigError::Invalid`].
pub fn load_database(path: &Path) -> Result<DatabaseConfig, ConfigError> {
    let (text, world_readable) = read(path)?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
    let Some(section) = table.get("database") else {
        return Err(ConfigError::Invalid { path: path.into(), problems: vec!["database: section missing".into()] });
    };
    let db: DatabaseConfig = section
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse { path: path.into(), message: format!("[database]: {e}") })?;
    let mut problems = Problems { world_readable, ..Problems::default() };
    db.validate(&mut problems);
    if problems.is_empty() { Ok(db) } else { Err(ConfigError::Invalid { path: path.into(), problems: problems.list }) }
}

/// Parses `text` as `T`; on failure, every error the parser finds, not only the first:
/// after each error the line it points at (a `key = value` line) or its whole section (a
/// header, or a value over several lines) is blanked, keeping the line numbers, and the
/// text is parsed again, at most 20 times. Errors are in plain words (see [`plain`]).
fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut errors: Vec<String> = Vec::new();
    let mut blanked_header = false;
    for _ in 0..20 {
        let attempt = lines.join("\n");
        let e = match toml::from_str::<T>(&attempt) {
            Ok(v) if errors.is_empty() => return Ok(v),
            Ok(_) => break,
            Err(e) => e,
        };
        let message = plain(&e.to_string());
        // With a section blanked, its absence is not a problem of the file.
        let absent_section = blanked_header && e.message().starts_with("missing field");
        if !absent_section && !errors.contains(&message) {
            errors.push(message);
        }
        let Some(at) = e.span().map(|s| attempt[..s.start.min(attempt.len())].matches('\n').count()) else { break };
        let line = lines.get(at).map(|l| l.trim().to_owned()).unwrap_or_default();
        let single = !line.starts_with('[') && line.contains('=') && toml::from_str::<toml::Table>(&line).is_ok();
        if single {
            lines[at].clear();
            continue;
        }
        // The section holding line `at`: from its header to the next header.
        let start = (0..=at.min(lines.len().saturating_sub(1))).rev().find(|&i| lines[i].trim_start().starts_with('['));
        let Some(start) = start else { break };
        let end = (start + 1..lines.len()).find(|&i| lines[i].trim_start().starts_with('[')).unwrap_or(lines.len());
        if lines[start..end].iter().all(String::is_empty) {
            break;
        }
        lines[start..end].iter_mut().for_each(String::clear);
        blanked_header = true;
    }
    Err(errors.join("\n"))
}

/// The parser's words for an expected type, said for an administrator: `expected u64`
/// becomes `expected a whole number, 0 or more`.
fn plain(message: &str) -> String {
    let mut out = message.to_owned();
    for (rust, words) in [
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected u32", "expected a whole number from 0 to 4294967295"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected i64", "expected a whole number"),
        ("expected a boolean", "expected true or false"),
        ("expected a sequence", "expected a list in brackets, such as [\"a\", \"b\"]"),
        ("invalid value: integer", "invalid value: number"),
        ("invalid type: integer", "invalid type: number"),
    ] {
        out = out.replace(rust, words);
    }
    out
}

fn read(path: &Path) -> Result<(String, bool), ConfigError> {
    let err = |source| ConfigError::Read { path: path.into(), source };
    let meta = std::fs::metadata(path).map_err(err)?;
    let text = std::fs::read_to_string(path).map_err(err)?;
    Ok((text, meta.permissions().mode() & 0o004 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        server: ServerConfig,
        database: DatabaseConfig,
        #[serde(default)]
        limits: LimitsConfig,
    }
    impl Validate for Sample {
        fn validate(&self, p: &mut Problems) {
            self.server.validate(p);
            self.database.validate(p);
            self.limits.validate(p);
        }
    }

    fn write(text: &str, mode: u32) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[test]
    fn good_file_loads_with_defaults() {
        let f = write("[server]\nname = \"mx.example.org\"\n[database]\nurl = \"sqlite:///tmp/x.db\"\n", 0o644);
        let c: Sample = load(f.path()).unwrap();
        assert_eq!(c.server.name, "mx.example.org");
        assert_eq!(c.database.max_connections, 8);
        assert_eq!(c.limits.input_timeout, None);
        assert_eq!(c.limits.input_timeout_or(300), 300);
        assert!(format!("{:?}", c.database).contains("redacted"));
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let f = write("[server]\nname = \"mx\"\nnmae = 1\n[database]\nurl = \"sqlite:x\"\n", 0o600);
        let e = load::<Sample>(f.path()).unwrap_err().to_string();
        assert!(e.contains("nmae"), "{e}");
        assert!(e.contains(&f.path().display().to_string()), "{e}");
    }

    #[test]
    fn all_problems_reported_at_once() {
        let f = write(
            "[server]\nname = \"bad name!\"\n[database]\nurl = \"oracle://x\"\nmax_connections = 0\n[limits]\nmax_errors = 0\n",
            0o600,
        );
        let ConfigError::Invalid { problems, .. } = load::<Sample>(f.path()).unwrap_err() else { panic!() };
        let all = problems.join("\n");
        for key in ["server.name", "database.url", "database.max_connections", "limits.max_errors"] {
            assert!(all.contains(key), "{key} missing in {all}");
        }
    }

    #[test]
    fn world_readable_password_is_refused() {
        let text = "[server]\nname = \"mx\"\n[database]\nurl = \"postgres://mm:s3cret@db/mmmail\"\n";
        let e = load::<Sample>(write(text, 0o644).path()).unwrap_err().to_string();
        assert!(e.contains("readable by others"), "{e}");
        assert!(!e.contains("s3cret"), "password leaked: {e}");
        assert!(load::<Sample>(write(text, 0o640).path()).is_ok());
        let nopw = "[server]\nname = \"mx\"\n[database]\nurl = \"postgres://mm@db/mmmail\"\n";
        assert!(load::<Sample>(write(nopw, 0o644).path()).is_ok());
    }

    #[test]
    fn password_detection() {
        let has = |u: &str| DatabaseConfig::from_url(u).has_password();
        assert!(has("mysql://root:pw@127.0.0.1/test"));
        assert!(has("postgres://u@h/db?password=x"));
        assert!(!has("mysql://root@127.0.0.1/test"));
        assert!(!has("mysql://root:@127.0.0.1/test"));
        assert!(!has("sqlite:///var/lib/mmmail/mmmail.db"));
    }

    #[test]
    fn database_section_alone() {
        let f =
            write("[server]\nname = \"mx\"\n[smtpd]\nwhatever = 1\n[database]\nurl = \"sqlite:///tmp/y.db\"\n", 0o600);
        assert_eq!(load_database(f.path()).unwrap().url.expose(), "sqlite:///tmp/y.db");
    }
}
