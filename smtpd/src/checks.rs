//! Who sent it (issue 14): forward-confirmed reverse DNS of the client, SPF (RFC 7208) of
//! its HELO and MAIL FROM identities, DKIM (RFC 6376), ARC (RFC 8617) and DMARC (RFC 7489)
//! of the message, DNS block and allow lists (RFC 5782) and greylisting, with the
//! verdicts in one `Authentication-Results:` field (RFC 8601) on every stored copy.
//!
//! The checking itself is mail-auth's, over hickory-resolver and its cache. What is ours:
//! when each lookup starts and how long a session waits for it. Lookups run while the
//! session goes on (reverse DNS and DNS lists from the connect, SPF from MAIL, DKIM, ARC
//! and DMARC after DATA), and a session waits for DNS answers at most `[dns] timeout`
//! seconds in all: a lookup that has not answered by then is a temporary error, which
//! never gets a 5xx.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::address::Address;
use common::store::{Greylisting, Store};
use ipnet::IpNet;
use mail_auth::common::cache::NoCache;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::common::resolver::ToReverseName;
use mail_auth::dmarc::Policy as DmarcPolicy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput, DmarcResult, DnsError,
    IprevOutput, IprevResult, MessageAuthenticator, RecordSet, SpfOutput, SpfResult,
};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::config::{Checking, DnsConfig, ListAction, ListStage, Policy, name_server};
use crate::proto::reply::Reply;

/// The checks of one daemon: the resolver and the settings, shared by its sessions.
pub struct Checker {
    auth: MessageAuthenticator,
    cfg: Checking,
    /// The authserv-id: `[server] name`.
    name: String,
    /// `dmarc_reject` of `[smtpd]`.
    dmarc_reject: bool,
    /// `[greylist]` delay, expire and keep, as the store takes them.
    grey_rule: Greylisting,
    /// When this daemon last purged old greylisting rows (epoch seconds).
    purged: AtomicI64,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker").field("name", &self.name).field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// The name servers and options of `/etc/resolv.conf`, read once: a reload after the
/// daemon dropped privileges (or entered a chroot) may not read it again.
static SYSTEM: OnceLock<(ResolverConfig, ResolverOpts)> = OnceLock::new();

/// Reads `/etc/resolv.conf` now, when the checks `cfg` asks for need it (some are on
/// and `[dns] servers` is empty), for every resolver made later: a daemon reads it as
/// root, before a `chroot` can hide it.
///
/// # Errors
/// It cannot be read or parsed.
pub fn read_resolv_conf(cfg: &Checking) -> anyhow::Result<()> {
    if cfg.any() && cfg.dns.servers.is_empty() {
        system()?;
    }
    Ok(())
}

/// The system's resolver configuration, read once.
fn system() -> anyhow::Result<(ResolverConfig, ResolverOpts)> {
    if let Some(c) = SYSTEM.get() {
        return Ok(c.clone());
    }
    let read = mail_auth::hickory_resolver::system_conf::read_system_conf().map_err(|e| {
        anyhow::anyhow!(
            "cannot read /etc/resolv.conf ({e}): name the DNS servers in [dns] servers, or turn the checks off \
             ([checks] enabled = false)"
        )
    })?;
    Ok(SYSTEM.get_or_init(|| read).clone())
}

/// The resolver `[dns]` describes.
///
/// # Errors
/// `/etc/resolv.conf` unreadable when `servers` is empty.
fn resolver(dns: &DnsConfig) -> anyhow::Result<MessageAuthenticator> {
    let (config, mut opts) = if dns.servers.is_empty() {
        system()?
    } else {
        let servers = dns.servers.iter().filter_map(|s| name_server(s)).map(server).collect();
        (ResolverConfig::from_name_servers(servers), ResolverOpts::default())
    };
    opts.timeout = Duration::from_secs(dns.timeout);
    opts.attempts = dns.attempts;
    opts.cache_size = dns.cache;
    // What the checks ask is always a full name; no search list. Verdicts come from
    // DNS alone: /etc/hosts names no sender.
    opts.ndots = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    // The resolver would load the system's CA certificates for DNS over TLS, which the
    // checks never use (and which a chroot hides): it gets an empty trust store instead.
    let tls = ClientConfig::builder_with_provider(Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("cannot set up the DNS resolver: {e}"))?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .with_tls_config(tls)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the DNS resolver: {e}"))?;
    Ok(MessageAuthenticator(resolver))
}

/// A name server at `at`, over UDP and (for long answers) TCP.
fn server(at: SocketAddr) -> NameServerConfig {
    let conn = |protocol| {
        let mut c = ConnectionConfig::new(protocol);
        c.port = at.port();
        c
    };
    let mut s = NameServerConfig::udp_and_tcp(at.ip());
    s.connections = vec![conn(ProtocolConfig::Udp), conn(ProtocolConfig::Tcp)];
    s
}

impl Checker {
    /// The checks `cfg` asks for; `None` when none is on (checks off, no DNS list, no
    /// greylisting).
    ///
    /// # Errors
    /// The resolver cannot be set up (see `[dns] servers`).
    pub fn new(name: &str, dmarc_reject: bool, cfg: &Checking) -> anyhow::Result<Option<Arc<Checker>>> {
        if !cfg.any() {
            return Ok(None);
        }
        let seconds = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
        let g = &cfg.greylist;
        Ok(Some(Arc::new(Checker {
            auth: resolver(&cfg.dns)?,
            cfg: cfg.clone(),
            name: name.to_owned(),
            dmarc_reject,
            grey_rule: Greylisting { delay: seconds(g.delay), expire: seconds(g.expire), keep: seconds(g.keep) },
            purged: AtomicI64::new(0),
        })))
    }

    /// The checks of a client at `ip`, started now; `None` for a client in `[checks]
    /// exempt`, which is not checked at all.
    pub fn start(self: &Arc<Self>, ip: IpAddr) -> Option<Client> {
        // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; SPF, DNS lists and
        // reverse DNS take them as the IPv4 clients they are.
        let ip = ip.to_canonical();
        if self.cfg.checks.exempt.iter().any(|n| n.contains(&ip)) {
            return None;
        }
        let rdns = self.cfg.checks.enabled.then(|| {
            let auth = self.auth.clone();
            Task::spawn(async move { rdns(&auth, ip).await })
        });
        let lists = (!self.cfg.dnsbl.is_empty()).then(|| {
            let (auth, lists) = (self.auth.clone(), self.cfg.dnsbl.clone());
            Task::spawn(async move { listings(&auth, ip, &lists).await })
        });
        Some(Client {
            checker: self.clone(),
            ip,
            left: Duration::from_secs(self.cfg.dns.timeout),
            rdns,
            lists,
            spf: None,
        })
    }

    /// SPF (RFC 7208 §2.4) of the MAIL FROM identity `sender` (for the null
    /// reverse-path: `postmaster@<helo>`) of a client at `ip` that said HELO `helo`.
    pub async fn spf_mail_from(&self, ip: IpAddr, helo: &str, sender: &str) -> SpfOutput {
        self.auth.verify_spf(SpfParameters::verify_mail_from(ip, helo, &self.name, sender)).await
    }

    /// SPF (RFC 7208 §2.3) of the HELO identity `helo` of a client at `ip`.
    pub async fn spf_helo(&self, ip: IpAddr, helo: &str) -> SpfOutput {
        self.auth.verify_spf(SpfParameters::verify_ehlo(ip, helo, &self.name)).await
    }
}

/// A lookup running on its own task, or its answer.
enum Task<T> {
    Running(JoinHandle<T>),
    Done(T),
    /// The task failed (a panic in the resolver): treated as a temporary error.
    Lost,
}

impl<T> Drop for Task<T> {
    /// A session that ends stops its lookups.
    fn drop(&mut self) {
        if let Task::Running(handle) = self {
            handle.abort();
        }
    }
}

impl<T: Send + 'static> Task<T> {
    fn spawn(f: impl Future<Output = T> + Send + 'static) -> Self {
        Task::Running(tokio::spawn(f))
    }

    /// The answer, waiting for it at most `left` (which is reduced by the wait); `None`
    /// when it did not come in time.
    async fn wait(&mut self, left: &mut Duration) -> Option<&T> {
        if let Task::Running(handle) = self {
            let started = tokio::time::Instant::now();
            // A finished task answers even with no time left: the timeout polls it first.
            let done = tokio::time::timeout(*left, handle).await.ok();
            *left = left.saturating_sub(started.elapsed());
            match done {
                None => return None,
                Some(Ok(v)) => *self = Task::Done(v),
                Some(Err(e)) => {
                    tracing::error!(cause = %e, "DNS lookup task failed");
                    *self = Task::Lost;
                }
            }
        }
        match self {
            Task::Done(v) => Some(v),
            _ => None,
        }
    }
}

// hickory-resolver's own cache keeps answers for their TTL; mail-auth's is not used.
const NO_V4: Option<&NoCache<Box<str>, RecordSet<std::net::Ipv4Addr>>> = None;
const NO_V6: Option<&NoCache<Box<str>, RecordSet<std::net::Ipv6Addr>>> = None;
const NO_PTR: Option<&NoCache<IpAddr, RecordSet<Box<str>>>> = None;

/// Forward-confirmed reverse DNS: the verdict, and the name that confirmed.
#[derive(Clone, Debug)]
struct Rdns {
    output: IprevOutput,
    name: Option<String>,
}

/// RFC 8601 §3 "iprev": a PTR name of `ip` whose A/AAAA records include `ip` (the
/// first 10 names are tried).
async fn rdns(auth: &MessageAuthenticator, ip: IpAddr) -> Rdns {
    let names = match auth.ptr_lookup(ip, NO_PTR).await {
        Ok(set) => set.rrset,
        Err(e) => return Rdns { output: IprevOutput { result: e.into(), ptr: None }, name: None },
    };
    let mut error = None;
    for name in names.iter().take(10) {
        let confirmed = match ip {
            IpAddr::V4(v4) => auth.ipv4_lookup(name.as_ref(), NO_V4).await.map(|s| s.rrset.contains(&v4)),
            IpAddr::V6(v6) => auth.ipv6_lookup(name.as_ref(), NO_V6).await.map(|s| s.rrset.contains(&v6)),
        };
        match confirmed {
            Ok(true) => {
                let name = name.trim_end_matches('.').to_owned();
                return Rdns { output: IprevOutput { result: IprevResult::Pass, ptr: Some(names) }, name: Some(name) };
            }
            Ok(false) => {}
            Err(e) => error = Some(e),
        }
    }
    let result = match error {
        Some(e @ mail_auth::Error::Dns(DnsError::Resolver(_))) => IprevResult::TempError(e),
        _ => IprevResult::Fail(mail_auth::Error::NotAligned),
    };
    Rdns { output: IprevOutput { result, ptr: Some(names) }, name: None }
}

/// A DNS list's answer for one client.
#[derive(Clone, Debug)]
struct Listing {
    zone: String,
    action: ListAction,
    stage: ListStage,
    /// The list answered with an error (not counted as listed).
    error: bool,
}

/// The DNS list query name of `ip` in `zone` (RFC 5782 §2.1, §2.4).
pub fn list_query(ip: IpAddr, zone: &str) -> String {
    format!("{}.{}.", ip.to_reverse_name(), zone.trim_end_matches('.'))
}

/// The lists `ip` is on (answers in a list's `answers`), and those that failed to
/// answer; every list is asked at once.
async fn listings(auth: &MessageAuthenticator, ip: IpAddr, lists: &[crate::config::DnsList]) -> Vec<Listing> {
    let mut asked = tokio::task::JoinSet::new();
    for (i, l) in lists.iter().cloned().enumerate() {
        let auth = auth.clone();
        asked.spawn(async move {
            let name = list_query(ip, &l.zone);
            let listed = match auth.ipv4_lookup(name.as_str(), NO_V4).await {
                Ok(set) => Some(set.rrset.iter().any(|a| l.answers.iter().any(|n| n.contains(&IpAddr::V4(*a))))),
                Err(mail_auth::Error::Dns(DnsError::RecordNotFound(_))) => Some(false),
                Err(e) => {
                    tracing::info!(zone = %l.zone, cause = %e, "DNS list did not answer");
                    None
                }
            };
            let listing = match listed {
                Some(false) => None,
                Some(true) => Some(Listing { zone: l.zone, action: l.action, stage: l.stage, error: false }),
                None => Some(Listing { zone: l.zone, action: ListAction::Record, stage: l.stage, error: true }),
            };
            (i, listing)
        });
    }
    let mut found: Vec<(usize, Listing)> = Vec::new();
    while let Some(done) = asked.join_next().await {
        if let Ok((i, Some(l))) = done {
            found.push((i, l));
        }
    }
    found.sort_by_key(|(i, _)| *i);
    found.into_iter().map(|(_, l)| l).collect()
}

/// SPF of one transaction: the HELO identity (when it is a domain) and MAIL FROM.
struct Spf {
    /// The HELO/EHLO name, without a trailing dot.
    helo: String,
    /// SPF of the HELO identity, when it is a domain.
    helo_spf: Option<Task<SpfOutput>>,
    mail: Task<SpfOutput>,
    /// The MAIL FROM identity checked: the reverse-path, or `postmaster@<HELO>` for `<>`.
    sender: String,
    /// The reverse-path as given (empty for `<>`).
    reverse_path: String,
}

impl Spf {
    /// The RFC5321.MailFrom domain: the reverse-path's, or HELO's for `<>`.
    fn mail_domain(&self) -> &str {
        self.sender.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

/// The checks of one client (one SMTP session).
pub struct Client {
    checker: Arc<Checker>,
    ip: IpAddr,
    /// What is left of the session's time for DNS answers.
    left: Duration,
    rdns: Option<Task<Rdns>>,
    lists: Option<Task<Vec<Listing>>>,
    spf: Option<Spf>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("ip", &self.ip).field("left", &self.left).finish_non_exhaustive()
    }
}

/// The verdict after DATA: the field for every copy, the refusal if a policy refuses,
/// and whether the message may skip greylisting.
#[derive(Debug)]
pub struct Verdict {
    /// `Authentication-Results: ...` CRLF.
    pub field: String,
    /// The reply when a policy refuses the message.
    pub refusal: Option<Reply>,
    /// A DKIM signature aligned with the From domain passed (DMARC's DKIM alignment).
    pub aligned: bool,
    /// `(check, result)` pairs, for the counters and the log.
    pub results: Vec<(&'static str, &'static str)>,
}

/// The reply a failed check gets under `policy` (`None`: recorded only).
fn refusal(policy: Policy, temp: bool, permanent: &str, temporary: &str) -> Option<Reply> {
    match (policy, temp) {
        (Policy::Record, _) => None,
        (_, true) => Some(Reply::new(451, "4.4.3 Temporary DNS failure, try again later")),
        (Policy::Tempfail, false) => Some(Reply::new(451, temporary.to_owned())),
        (Policy::Reject, false) => Some(Reply::new(550, permanent.to_owned())),
    }
}

fn spf_text(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_text(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dmarc_text(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

fn iprev_text(r: &IprevResult) -> &'static str {
    match r {
        IprevResult::Pass => "pass",
        IprevResult::Fail(_) => "fail",
        IprevResult::TempError(_) => "temperror",
        IprevResult::PermError(_) => "permerror",
        IprevResult::None => "none",
    }
}

fn timed_out() -> mail_auth::Error {
    mail_auth::Error::Dns(DnsError::Resolver("no answer within [dns] timeout".into()))
}

impl Client {
    /// The client's forward-confirmed host name (waits for the lookup, within the
    /// session's DNS time); `None` when it has none, or when the checks are off.
    pub async fn host_name(&mut self) -> Option<String> {
        let rdns = self.rdns.as_mut()?;
        rdns.wait(&mut self.left).await.and_then(|r| r.name.clone())
    }

    async fn rdns_output(&mut self) -> Option<IprevOutput> {
        let rdns = self.rdns.as_mut()?;
        Some(match rdns.wait(&mut self.left).await {
            Some(r) => r.output.clone(),
            None => IprevOutput { result: IprevResult::TempError(timed_out()), ptr: None },
        })
    }

    /// The block list listing that refuses at `stage`, if any (an allow listing wins);
    /// a list that did not answer in time refuses nothing.
    async fn listed(&mut self, stage: ListStage) -> Option<Listing> {
        let lists = self.lists.as_mut()?.wait(&mut self.left).await?;
        if lists.iter().any(|l| l.action == ListAction::Allow && !l.error) {
            return None;
        }
        lists
            .iter()
            .find(|l| !l.error && l.stage == stage && matches!(l.action, ListAction::Reject | ListAction::Tempfail))
            .cloned()
    }

    /// Whether an allow list lists the client (known as soon as the lists answered).
    async fn allow_listed(&mut self) -> bool {
        let Some(lists) = self.lists.as_mut() else { return false };
        lists.wait(&mut self.left).await.is_some_and(|l| l.iter().any(|l| l.action == ListAction::Allow && !l.error))
    }

    /// The DNS lists' verdicts: `(zone, "listed" | "error")` for each list that lists
    /// the client or did not answer (waiting for them within the session's DNS time).
    pub async fn list_results(&mut self) -> Vec<(String, &'static str)> {
        let Some(lists) = self.lists.as_mut() else { return Vec::new() };
        let Some(lists) = lists.wait(&mut self.left).await else { return Vec::new() };
        lists.iter().map(|l| (l.zone.clone(), if l.error { "error" } else { "listed" })).collect()
    }

    /// At connect: the reply instead of the greeting when a block list with `stage =
    /// "connect"` lists the client (then the connection closes).
    pub async fn at_connect(&mut self, name: &str) -> Option<Reply> {
        let l = self.listed(ListStage::Connect).await?;
        Some(match l.action {
            ListAction::Tempfail => Reply::new(
                421,
                format!("4.7.1 {name} Service unavailable, client [{}] listed at {}, try again later", self.ip, l.zone),
            ),
            _ => {
                Reply::new(554, format!("5.7.1 {name} Service unavailable, client [{}] listed at {}", self.ip, l.zone))
            }
        })
    }

    /// At RCPT: the refusal when a block list with `stage = "rcpt"` lists the client.
    pub async fn at_rcpt(&mut self) -> Option<Reply> {
        let l = self.listed(ListStage::Rcpt).await?;
        Some(match l.action {
            ListAction::Tempfail => {
                Reply::new(450, format!("4.7.1 Client [{}] listed at {}, try again later", self.ip, l.zone))
            }
            _ => Reply::new(554, format!("5.7.1 Client [{}] listed at {}", self.ip, l.zone)),
        })
    }

    /// At MAIL: starts SPF for the transaction (HELO `helo`, reverse-path `from`) and
    /// answers with the refusal `[checks] rdns` or `spf` asks for (waiting for those
    /// answers only when a policy needs them).
    pub async fn at_mail(&mut self, helo: &str, from: Option<&Address>) -> Option<Reply> {
        let c = self.checker.clone();
        if !c.cfg.checks.enabled {
            return None;
        }
        let helo = helo.trim_end_matches('.').to_owned();
        let helo_is_domain = common::address::is_domain(&helo) && helo.contains('.');
        let reverse_path = from.map(ToString::to_string).unwrap_or_default();
        let sender = if reverse_path.is_empty() { format!("postmaster@{helo}") } else { reverse_path.clone() };
        let ip = self.ip;
        let helo_spf = helo_is_domain.then(|| {
            let (checker, helo) = (c.clone(), helo.clone());
            Task::spawn(async move { checker.spf_helo(ip, &helo).await })
        });
        let mail = {
            let (checker, helo, sender) = (c.clone(), helo.clone(), sender.clone());
            Task::spawn(async move { checker.spf_mail_from(ip, &helo, &sender).await })
        };
        self.spf = Some(Spf { helo, helo_spf, mail, sender, reverse_path });
        if c.cfg.checks.rdns != Policy::Record {
            let out = self.rdns_output().await?;
            let temp = matches!(out.result, IprevResult::TempError(_));
            if !matches!(out.result, IprevResult::Pass) {
                tracing::info!(peer = %self.ip, iprev = iprev_text(&out.result), "reverse DNS check failed");
                return refusal(
                    c.cfg.checks.rdns,
                    temp,
                    "5.7.25 Reverse DNS validation failed",
                    "4.7.25 Reverse DNS validation failed, try again later",
                );
            }
        }
        if c.cfg.checks.spf != Policy::Record {
            let spf = self.spf_mail().await;
            let r = spf.result();
            if matches!(r, SpfResult::Fail | SpfResult::TempError) {
                tracing::info!(peer = %self.ip, spf = spf_text(r), "SPF check failed");
                return refusal(
                    c.cfg.checks.spf,
                    r == SpfResult::TempError,
                    "5.7.23 SPF validation failed",
                    "4.7.23 SPF validation failed, try again later",
                );
            }
        }
        None
    }

    async fn spf_mail(&mut self) -> SpfOutput {
        let Some(spf) = self.spf.as_mut() else {
            return SpfOutput::new(String::new()).with_result(SpfResult::None);
        };
        let domain = spf.mail_domain().to_owned();
        match spf.mail.wait(&mut self.left).await {
            Some(o) => o.clone(),
            None => SpfOutput::new(domain).with_result(SpfResult::TempError),
        }
    }

    /// After DATA: DKIM, ARC and DMARC of `message` (the bytes as received) together
    /// with what the session learnt, and the policies' verdict.
    pub async fn after_data(&mut self, message: &[u8]) -> Verdict {
        let c = self.checker.clone();
        let mut results = Vec::new();
        if !c.cfg.checks.enabled {
            let field = AuthenticationResults::new(&c.name).to_header();
            return Verdict { field, refusal: None, aligned: false, results };
        }
        let ip = self.ip;
        let iprev = self.rdns_output().await;
        let spf_mail = self.spf_mail().await;
        let (helo, reverse_path, mail_domain) = match &self.spf {
            Some(s) => (s.helo.clone(), s.reverse_path.clone(), s.mail_domain().to_owned()),
            None => (String::new(), String::new(), String::new()),
        };
        let spf_helo = match self.spf.as_mut().and_then(|s| s.helo_spf.as_mut()) {
            Some(task) => Some(match task.wait(&mut self.left).await {
                Some(o) => o.clone(),
                None => SpfOutput::new(helo.clone()).with_result(SpfResult::TempError),
            }),
            None => None,
        };

        let parsed = AuthenticatedMessage::parse(message);
        let budget = self.left;
        let started = tokio::time::Instant::now();
        let (dkim, arc, dmarc) = match &parsed {
            Some(m) => {
                let checked = tokio::time::timeout(budget, async {
                    let (dkim, arc) = tokio::join!(c.auth.verify_dkim(m), c.auth.verify_arc(m));
                    let dmarc = c.auth.verify_dmarc(DmarcParameters::new(m, &dkim, &mail_domain, &spf_mail)).await;
                    (dkim, arc, dmarc)
                })
                .await;
                match checked {
                    Ok((dkim, arc, dmarc)) => (dkim, arc, Some(dmarc)),
                    Err(_) => {
                        let dkim = if m.dkim_headers.is_empty() {
                            Vec::new()
                        } else {
                            vec![DkimOutput::temp_err(timed_out())]
                        };
                        (dkim, ArcOutput::default().with_result(DkimResult::TempError(timed_out())), None)
                    }
                }
            }
            None => (Vec::new(), ArcOutput::default(), None),
        };
        self.left = self.left.saturating_sub(started.elapsed());

        let header_from = parsed.as_ref().and_then(|m| m.from.first().cloned()).unwrap_or_default();
        let mut ar = AuthenticationResults::new(&c.name);
        if let Some(iprev) = &iprev {
            ar = ar.with_iprev_result(iprev, ip);
            results.push(("iprev", iprev_text(&iprev.result)));
        }
        if let Some(out) = &spf_helo {
            ar = ar.with_spf_ehlo_result(out, ip, &helo);
            results.push(("spf-helo", spf_text(out.result())));
        }
        ar = ar.with_spf_mailfrom_result(&spf_mail, ip, &reverse_path, &helo);
        results.push(("spf", spf_text(spf_mail.result())));
        if dkim.is_empty() {
            results.push(("dkim", "none"));
        }
        for d in &dkim {
            results.push(("dkim", dkim_text(d.result())));
        }
        ar = ar.with_dkim_results(&dkim, &header_from);
        if !matches!(arc.result(), DkimResult::None) {
            ar = ar.with_arc_result(&arc, ip);
        }
        results.push(("arc", dkim_text(arc.result())));
        let dmarc = dmarc.unwrap_or_else(|| {
            DmarcOutput::default().with_domain(&header_from).with_dkim_result(DmarcResult::TempError(timed_out()))
        });
        let dmarc_result = dmarc.result();
        if !header_from.is_empty() {
            ar = ar.with_dmarc_result(&dmarc);
        }
        results.push(("dmarc", dmarc_text(&dmarc_result)));

        let aligned = *dmarc.dkim_result() == DmarcResult::Pass;
        let refusal = self.policy(&dkim, &arc, &dmarc, &dmarc_result);
        Verdict { field: ar.to_header(), refusal, aligned, results }
    }

    /// The refusal the policies ask for after DATA, if any.
    fn policy(
        &self,
        dkim: &[DkimOutput<'_>],
        arc: &ArcOutput<'_>,
        dmarc: &DmarcOutput,
        r: &DmarcResult,
    ) -> Option<Reply> {
        let cfg = &self.checker.cfg.checks;
        let rejected = || format!("5.7.1 Rejected by the DMARC policy of {}", dmarc.domain());
        if matches!(r, DmarcResult::Fail(_)) && dmarc.policy() == DmarcPolicy::Reject && self.checker.dmarc_reject {
            return Some(Reply::new(550, rejected()));
        }
        if matches!(r, DmarcResult::Fail(_) | DmarcResult::TempError(_)) {
            let refused = refusal(
                cfg.dmarc,
                matches!(r, DmarcResult::TempError(_)),
                &rejected(),
                &format!("4.7.1 DMARC check of {} failed, try again later", dmarc.domain()),
            );
            if refused.is_some() {
                return refused;
            }
        }
        let passed = dkim.iter().any(|d| *d.result() == DkimResult::Pass);
        if !dkim.is_empty() && !passed {
            let temp = dkim.iter().any(|d| matches!(d.result(), DkimResult::TempError(_)));
            let refused = refusal(
                cfg.dkim,
                temp,
                "5.7.20 No passing DKIM signature found",
                "4.7.20 No passing DKIM signature found, try again later",
            );
            if refused.is_some() {
                return refused;
            }
        }
        match arc.result() {
            DkimResult::Fail(_) | DkimResult::PermError(_) => refusal(
                cfg.arc,
                false,
                "5.7.29 ARC validation failure",
                "4.7.29 ARC validation failure, try again later",
            ),
            DkimResult::TempError(_) => refusal(cfg.arc, true, "", ""),
            _ => None,
        }
    }

    /// Greylisting after DATA (`[greylist]`): the refusal for this transaction's
    /// triplets (reverse-path `from`, each of `forward_paths`), unless the client or
    /// the message may skip it.
    ///
    /// # Errors
    /// The database failed (a temporary error for the client).
    pub async fn greylist(
        &mut self,
        store: &Store,
        from: &str,
        forward_paths: &[&str],
        aligned: bool,
    ) -> Result<Option<Reply>, common::error::StoreError> {
        let c = self.checker.clone();
        let g = &c.cfg.greylist;
        if !g.enabled || aligned || g.pass.iter().any(|n| n.contains(&self.ip)) || self.allow_listed().await {
            return Ok(None);
        }
        let prefix = if self.ip.is_ipv4() { g.ipv4_prefix } else { g.ipv6_prefix };
        let net = IpNet::new(self.ip, prefix).map(|n| n.trunc()).unwrap_or_else(|_| IpNet::from(self.ip)).to_string();
        let rule = c.grey_rule;
        let mut wait = 0;
        for to in forward_paths {
            let key = triplet_key(&net, from, to);
            wait = wait.max(store.greylist(&key, &net, rule).await?);
        }
        self.purge(store, rule).await;
        Ok((wait > 0).then(|| {
            tracing::info!(peer = %self.ip, %net, from, wait, "greylisted");
            Reply::new(451, format!("4.7.1 Greylisted, try again in {wait} seconds"))
        }))
    }

    /// Deletes old greylisting rows, at most once an hour per daemon.
    async fn purge(&self, store: &Store, rule: Greylisting) {
        let now = common::store::unix_now();
        let last = self.checker.purged.load(Ordering::Relaxed);
        if now - last < 3600
            || self.checker.purged.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        match store.greylist_purge(rule.keep.max(rule.expire)).await {
            Ok(n) => tracing::debug!(rows = n, "old greylisting triplets deleted"),
            Err(e) => tracing::warn!(cause = %e, "greylisting purge failed"),
        }
    }
}

/// The greylisting key of a triplet: SHA-256 (hex) of network, reverse-path and
/// forward-path, the paths compared without case.
pub fn triplet_key(net: &str, from: &str, to: &str) -> String {
    let mut h = Sha256::new();
    for part in [net, &from.to_lowercase(), &to.to_lowercase()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `message` without the `Authentication-Results:` fields that claim `authserv_id` (RFC
/// 8601 §5: a receiver removes such fields, which it did not add, before adding its own);
/// `None` when there is none.
pub fn strip_own_results(message: &[u8], authserv_id: &str) -> Option<Vec<u8>> {
    let header_end = header_len(message);
    let mut fields: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    while at < header_end {
        let start = at;
        // A field: its first line and every folded line after it.
        loop {
            let end = message[at..header_end].iter().position(|&b| b == b'\n').map_or(header_end, |i| at + i + 1);
            at = end;
            if at >= header_end || !matches!(message[at], b' ' | b'\t') {
                break;
            }
        }
        fields.push((start, at));
    }
    let ours = |&(s, e): &(usize, usize)| {
        let field = &message[s..e];
        let Some(colon) = field.iter().position(|&b| b == b':') else { return false };
        field[..colon].trim_ascii().eq_ignore_ascii_case(b"Authentication-Results")
            && authserv(&field[colon + 1..]).is_some_and(|id| id.eq_ignore_ascii_case(authserv_id.as_bytes()))
    };
    if !fields.iter().any(ours) {
        return None;
    }
    let mut out = Vec::with_capacity(message.len());
    for f in &fields {
        if !ours(f) {
            out.extend_from_slice(&message[f.0..f.1]);
        }
    }
    out.extend_from_slice(&message[header_end..]);
    Some(out)
}

/// The length of `message`'s header section, up to (not including) the empty line.
fn header_len(message: &[u8]) -> usize {
    let mut at = 0;
    while at < message.len() {
        if message[at..].starts_with(b"\r\n") || message[at] == b'\n' {
            return at;
        }
        at = message[at..].iter().position(|&b| b == b'\n').map_or(message.len(), |i| at + i + 1);
    }
    message.len()
}

/// The authserv-id at the start of an `Authentication-Results:` value (RFC 8601 §2.2:
/// `[CFWS] authserv-id`, comments skipped).
fn authserv(value: &[u8]) -> Option<&[u8]> {
    let mut i = 0;
    let mut depth = 0u32;
    while i < value.len() {
        match value[i] {
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            b'\\' if depth > 0 => i += 1,
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ if depth > 0 => {}
            _ => break,
        }
        i += 1;
    }
    let start = i;
    while i < value.len() && !matches!(value[i], b';' | b' ' | b'\t' | b'\r' | b'\n' | b'(') {
        i += 1;
    }
    let id = &value[start..i];
    // A quoted authserv-id (a value may be a quoted-string).
    let id = id.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(id);
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::{authserv, list_query, strip_own_results, triplet_key};

    #[test]
    fn own_results_are_removed_others_kept() {
        let m = b"Authentication-Results: mx.example.org; spf=pass\r\n\
                  Authentication-Results: (forged) MX.Example.Org;\r\n\tdkim=pass\r\n\
                  Authentication-Results: other.example; dkim=fail\r\n\
                  Subject: hi\r\n\r\nAuthentication-Results: mx.example.org; body\r\n";
        let out = strip_own_results(m, "mx.example.org").expect("two are ours");
        assert_eq!(
            out,
            b"Authentication-Results: other.example; dkim=fail\r\nSubject: hi\r\n\r\n\
              Authentication-Results: mx.example.org; body\r\n"
        );
        assert!(strip_own_results(b"Subject: x\r\n\r\nbody", "mx.example.org").is_none());
        assert!(
            strip_own_results(b"Authentication-Results: mx.example.org.evil; x\r\n\r\n", "mx.example.org").is_none()
        );
    }

    #[test]
    fn authserv_id_skips_comments() {
        assert_eq!(authserv(b" (a (nested) comment) id.example 1; none"), Some(&b"id.example"[..]));
        assert_eq!(authserv(b"id.example;none"), Some(&b"id.example"[..]));
        assert_eq!(authserv(b"  "), None);
    }

    #[test]
    fn list_queries_reverse_the_address() {
        assert_eq!(list_query("192.0.2.99".parse().expect("ip"), "bl.example"), "99.2.0.192.bl.example.");
        assert_eq!(
            list_query("2001:db8::1".parse().expect("ip"), "bl.example."),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example."
        );
    }

    #[test]
    fn triplets_ignore_case_of_paths() {
        assert_eq!(
            triplet_key("192.0.2.0/24", "A@B.example", "x@Y"),
            triplet_key("192.0.2.0/24", "a@b.example", "X@y")
        );
        assert_ne!(triplet_key("192.0.2.0/24", "a@b", "x@y"), triplet_key("192.0.3.0/24", "a@b", "x@y"));
    }
}
