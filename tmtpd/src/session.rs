//! What each TMTP request does (spec/tmtp.md §3, §5, §7, §10), given the bytes of its
//! data: admission by connection state, the op's checks and effects in the store, the
//! replies, and the messages it queues. No sockets here: the connection loop
//! ([`crate::conn`]) reads frames and streams post data through [`Upload`].

use std::sync::Arc;

use common::StoreError;
use common::stats::Flag;
use common::store::{AddAlias, AddNode, MemberStatus, Node, ReadyMessage, UploadPart, WholeMessage};
use serde_json::Value;

use crate::hub::{Hub, Link, Outgoing, now_ms};
use crate::proto::Quit;
use crate::proto::base32;
use crate::proto::header::{Header, Op, Target};
use crate::proto::message::{self, Fields, fields, posted, with_headsum};
use crate::queue::wire_id;

/// Ping and GroupInvite text limits (spec §5.9).
pub const MAX_TEXT_BYTES: i64 = 420;
/// In UTF-16 code units.
pub const MAX_TEXT_UNITS: usize = 140;
/// Aliases and gids: at least this many bytes (§10.4).
pub const MIN_NAME: usize = 8;
/// Longest alias or gid stored (mnm crashed on long ones, §15.1).
pub const MAX_NAME: usize = 255;

/// Where a connection is (spec §3.1).
#[derive(Default)]
pub enum State {
    /// No TmtpRev yet.
    #[default]
    New,
    /// TmtpRev done.
    Rev,
    /// Logged in as a node.
    Online(Online),
}

/// A logged-in connection.
pub struct Online {
    /// The node.
    pub key: Node,
    /// Its link.
    pub link: Arc<Link>,
    /// Whether this connection issued OhiEdit (presence reference).
    pub ohi: bool,
}

/// What the connection loop does after a request.
pub enum Step {
    /// Write these bytes (may be empty) and read on.
    Reply(Vec<u8>),
    /// Write these bytes, then start delivering to the node now online.
    LoggedIn(Vec<u8>, Node, tokio::sync::mpsc::Receiver<String>),
    /// Write the quit frame (if TmtpRev was seen) and close.
    Quit(Quit),
}

/// Refusals that stay inside an ack (`error` text).
pub(crate) type Soft = String;

pub(crate) fn is_uid_text(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'%')
}

/// mnm's "printable" (spec §10.4): letters, marks, numbers, punctuation, symbols and the
/// ASCII space; no other white space, controls or U+FFFD.
pub(crate) fn printable(s: &str) -> bool {
    s.chars().all(|c| c == ' ' || !(c.is_control() || c.is_whitespace() || c == '\u{fffd}' || is_format(c)))
}

fn is_format(c: char) -> bool {
    matches!(c, '\u{ad}' | '\u{600}'..='\u{605}' | '\u{61c}' | '\u{6dd}' | '\u{70f}' | '\u{200b}'..='\u{200f}'
        | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

/// Checks Ping/GroupInvite text (spec §5.9).
///
/// # Errors
/// The quit: not UTF-8 (or U+FFFD), or over 140 UTF-16 units.
pub fn check_text(data: &[u8]) -> Result<(), Quit> {
    let text = std::str::from_utf8(data).map_err(|_| Quit::NotUtf8)?;
    if text.contains('\u{fffd}') {
        return Err(Quit::NotUtf8);
    }
    if text.encode_utf16().count() > MAX_TEXT_UNITS {
        return Err(Quit::DataTooLong);
    }
    Ok(())
}

/// The standard fields of a queued message (spec §4.2).
pub(crate) fn standard(op: &str, from: &str, id: i64, posted_ms: i64, datalen: i64) -> Fields {
    fields([
        ("op", op.into()),
        ("id", wire_id(id).into()),
        ("from", from.into()),
        ("posted", posted(posted_ms).into()),
        ("datalen", datalen.into()),
    ])
}

/// Copies `datahead`/`datasum` from the request when non-zero (spec §4.2 quirk).
pub(crate) fn copy_data_fields(f: &mut Fields, h: &Header) {
    if h.datahead != 0 {
        f.insert("datahead".into(), h.datahead.into());
    }
    if h.datasum != 0 {
        f.insert("datasum".into(), h.datasum.into());
    }
}

/// An upload of post data in progress: chunks go to the store as they arrive, each
/// written as soon as it is whole, but for the last (its length is known from the
/// request's header), which is held for the ready (see [`queue_all`]); the first write
/// also begins the message: `n` commits for `n` chunks ([`common::Store::tmtp_upload`]),
/// and at most one chunk of the upload in memory at a time.
pub struct Upload {
    /// The message id.
    pub id: i64,
    /// Chunks written or held (the next one's number).
    seq: i64,
    /// Data bytes taken, written or held.
    pub size: i64,
    /// Whether a write of the message was tried (then a failed upload is discarded).
    begun: bool,
    /// The last chunk, not yet written (at most [`crate::conn::CHUNK`] bytes).
    held: Vec<u8>,
}

impl Upload {
    /// An upload of message `id`; nothing is written before its first whole chunk that
    /// is not its last, or its ready.
    pub fn new(id: i64) -> Upload {
        Upload { id, seq: 0, size: 0, begun: false, held: Vec::new() }
    }

    /// Takes the next chunk (handed over, not copied): written now, or held when it is
    /// the `last`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn put(&mut self, hub: &Hub, data: Vec<u8>, last: bool) -> Result<(), StoreError> {
        if data.is_empty() {
            return Ok(());
        }
        self.size += data.len() as i64;
        self.held = data;
        if !last {
            let part = self.part(None);
            hub.store.tmtp_upload(self.id, part).await?;
        }
        Ok(())
    }

    /// The next write: what is held (handed over), the message row before the first
    /// write, and `ready`.
    fn part<'a>(&mut self, ready: Option<ReadyMessage<'a>>) -> UploadPart<'a> {
        let held = std::mem::take(&mut self.held);
        let chunk = (!held.is_empty()).then_some((self.seq, held));
        self.seq += i64::from(chunk.is_some());
        UploadPart { begin: !std::mem::replace(&mut self.begun, true), chunk, ready }
    }

    /// Drops what was written of it (an upload that failed or will not be queued).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn discard(&self, hub: &Hub) -> Result<(), StoreError> {
        if self.begun { hub.store.tmtp_discard(self.id).await } else { Ok(()) }
    }
}

/// The data of a message being posted.
pub enum Body {
    /// All of it in memory (at most one chunk): stored with its queue rows in one
    /// commit and handed to online recipients from memory.
    Whole {
        /// The message id.
        id: i64,
        /// The data.
        data: Vec<u8>,
    },
    /// Streamed into the store chunk by chunk as it arrived (a large post).
    Streamed(Upload),
}

impl Body {
    /// The message id.
    pub fn id(&self) -> i64 {
        match self {
            Body::Whole { id, .. } => *id,
            Body::Streamed(up) => up.id,
        }
    }

    /// Data bytes.
    pub fn size(&self) -> i64 {
        match self {
            Body::Whole { data, .. } => data.len() as i64,
            Body::Streamed(up) => up.size,
        }
    }

    /// Drops what was stored of a message that will not be queued.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn discard(&self, hub: &Hub) -> Result<(), StoreError> {
        match self {
            Body::Whole { .. } => Ok(()),
            Body::Streamed(up) => up.discard(hub).await,
        }
    }
}

/// The largest message (frame and data, bytes) handed to online recipients in memory.
pub const HAND_MAX: usize = 8 * 1024;

/// A message ready to be queued: its data, header fields, priority and recipients.
pub(crate) struct Queueing {
    pub(crate) body: Body,
    pub(crate) header: Fields,
    pub(crate) prio: u8,
    pub(crate) nodes: Vec<Node>,
}

/// Queues messages for their recipients and tells the online ones. Messages that came
/// whole are stored together in one transaction, then handed to the recipients online
/// here from memory; a streamed one is made deliverable by its own commit, and its
/// recipients read it from the database.
///
/// # Errors
/// [`StoreError`]: nothing of a failed commit is queued.
pub(crate) async fn queue_all(hub: &Hub, messages: Vec<Queueing>) -> Result<(), StoreError> {
    let frames: Vec<Vec<u8>> = messages.iter().map(|m| with_headsum(m.header.clone())).collect();
    let whole: Vec<WholeMessage<'_>> = messages
        .iter()
        .zip(&frames)
        .filter_map(|(m, frame)| match &m.body {
            Body::Whole { id, data } => {
                Some(WholeMessage { id: *id, header: frame, data, prio: prio_text(m.prio), nodes: &m.nodes })
            }
            Body::Streamed(_) => None,
        })
        .collect();
    let remote = hub.remote(messages.iter().flat_map(|m| &m.nodes));
    hub.store.tmtp_store_messages(&whole, remote).await?;
    for (mut m, frame) in messages.into_iter().zip(frames) {
        let id = m.body.id();
        let frame = match &mut m.body {
            Body::Whole { data, .. }
                if frame.len() + data.len() <= HAND_MAX || hub.frames.fits(frame.len() + data.len()) =>
            {
                let mut whole = Vec::with_capacity(frame.len() + data.len());
                whole.extend_from_slice(&frame);
                whole.extend_from_slice(data.as_slice());
                let whole: Arc<[u8]> = whole.into();
                // Kept for the recipients that will read it back (offline now, or
                // online with a long queue), and handed to the others when small.
                hub.frames.put(id, whole.clone());
                (whole.len() <= HAND_MAX).then_some(whole)
            }
            Body::Whole { .. } => None,
            Body::Streamed(up) => {
                let (prio, remote) = (prio_text(m.prio), hub.remote(&m.nodes));
                let ready = ReadyMessage { header: &frame, size: up.size, prio, nodes: &m.nodes, remote };
                hub.store.tmtp_upload(up.id, up.part(Some(ready))).await?;
                None
            }
        };
        // Online recipients learn of it from memory, not by reading their queues again.
        hub.hand(&m.nodes, &Arc::new(Outgoing { prio: m.prio, id, frame }));
    }
    Ok(())
}

/// A queue priority as stored: `E` or `M` (spec/tmtp.md §4.5).
fn prio_text(prio: u8) -> &'static str {
    if prio == b'E' { "E" } else { "M" }
}

/// Stores a message with its data (at most one chunk) in one commit and hands it to
/// its recipients online here.
pub(crate) async fn store_small(
    hub: &Hub,
    id: i64,
    header: Fields,
    data: &[u8],
    prio: u8,
    nodes: Vec<Node>,
) -> Result<(), StoreError> {
    queue_all(hub, vec![Queueing { body: Body::Whole { id, data: data.to_vec() }, header, prio, nodes }]).await
}

/// Recipient resolution (spec §7): the nodes to queue to, or the ack error.
pub(crate) async fn resolve(
    hub: &Hub,
    sender: &Node,
    targets: &[Target],
    with_self: bool,
) -> Result<Result<Vec<Node>, Soft>, StoreError> {
    let s = &sender.uid;
    // Nodes of groups come in one query each; those of every uid named directly, with
    // the sender's own, in one for all.
    let mut named: Vec<&str> = targets
        .iter()
        .filter(|t| !matches!(t.kind, 2 | 3) && is_uid_text(&t.id))
        .map(|t| t.id.as_str())
        .chain(with_self.then_some(s.as_str()))
        .collect();
    named.sort_unstable();
    named.dedup();
    let mut accounts = hub.store.tmtp_users_nodes(&named).await?;
    let mut nodes: std::collections::BTreeSet<Node> = std::collections::BTreeSet::new();
    let mut reached = false;
    for t in targets {
        match t.kind {
            2 | 3 => {
                if t.id.len() > MAX_NAME {
                    return Ok(Err(format!("GroupGetUsers: iGid {} not found", t.id)));
                }
                let members = hub.store.tmtp_members(&t.id).await?;
                if members.is_empty() {
                    return Ok(Err(format!("GroupGetUsers: iGid {} not found", t.id)));
                }
                if !members.iter().any(|m| &m.uid == s && m.status != MemberStatus::Barred) {
                    return Ok(Err(format!("GroupGetUsers: iByUid {s} not a member")));
                }
                if t.kind == 2 && members.iter().any(|m| &m.uid == s && m.status == MemberStatus::Joined) {
                    reached = true;
                }
                let group = hub.store.tmtp_group_nodes(&t.id).await?;
                nodes.extend(group.into_iter().filter(|n| t.kind == 2 || &n.uid != s));
            }
            _ => {
                if !is_uid_text(&t.id) {
                    return Ok(Err(format!("fetchUser: invalid string '{}'", t.id)));
                }
                let Some(nums) = accounts.get(&t.id) else {
                    return Ok(Err(format!("OpenNodes: iUid {} not found", t.id)));
                };
                if &t.id == s {
                    reached = true;
                }
                nodes.extend(nums.iter().map(|&num| Node { uid: t.id.clone(), num }));
            }
        }
    }
    // The sender's own nodes, unless a group or a direct target brought them already.
    if with_self && !nodes.iter().any(|n| &n.uid == s) {
        for num in accounts.remove(s).unwrap_or_default() {
            nodes.insert(Node { uid: s.clone(), num });
        }
    }
    if !reached {
        nodes.remove(sender);
    }
    Ok(Ok(nodes.into_iter().collect()))
}

pub(crate) fn own(uid: &str) -> Vec<Target> {
    vec![Target { id: uid.to_owned(), kind: 1 }]
}

/// Adds an alias with mnm's checks and texts (spec §5.3, §10.4).
pub(crate) async fn add_alias(hub: &Hub, uid: &str, alias: &str) -> Result<Option<Soft>, StoreError> {
    if alias.len() < MIN_NAME {
        return Ok(Some("newalias must be 8+ characters".into()));
    }
    if !printable(alias) {
        return Ok(Some(format!("AddAlias: invalid string '{alias}'")));
    }
    if alias.len() > MAX_NAME {
        return Ok(Some(format!("AddAlias: alias {alias} not available")));
    }
    Ok(match hub.store.tmtp_add_alias(uid, alias).await? {
        AddAlias::Added => None,
        AddAlias::Taken => Some(format!("AddAlias: alias {alias} already taken")),
        AddAlias::NotAvailable => Some(format!("AddAlias: alias {alias} not available")),
    })
}

/// Why a credential could not be made. Never papered over: an account without a
/// secret from the system's random source, or with an empty stored hash, must not exist.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The system's random source failed.
    #[error("no randomness for a new credential: {0}")]
    Random(getrandom::Error),
    /// The hashing task did not finish.
    #[error("node secret hashing failed: {0}")]
    Hash(tokio::task::JoinError),
}

/// A new node secret: (the 40-character nodeid, its stored hash).
///
/// # Errors
/// [`CredentialError`]: nothing may be created then.
pub(crate) async fn new_node_secret() -> Result<(String, String), CredentialError> {
    let mut raw = [0u8; 25];
    getrandom::fill(&mut raw).map_err(CredentialError::Random)?;
    let nodeid = base32::encode(&raw);
    let hash = node_hash(raw.to_vec()).await?;
    Ok((nodeid, hash))
}

/// The stored hash of a node secret (22389 × SHA-256, off the runtime).
///
/// # Errors
/// [`CredentialError::Hash`].
pub(crate) async fn node_hash(raw: Vec<u8>) -> Result<String, CredentialError> {
    tokio::task::spawn_blocking(move || base32::node_hash(&raw)).await.map_err(CredentialError::Hash)
}

/// A new random uid.
///
/// # Errors
/// [`CredentialError::Random`].
pub(crate) fn new_uid() -> Result<String, CredentialError> {
    let mut raw = [0u8; 20];
    getrandom::fill(&mut raw).map_err(CredentialError::Random)?;
    Ok(base32::encode(&raw))
}

/// The connection's request handler.
pub struct Session {
    pub(crate) hub: Arc<Hub>,
    /// Where the connection is.
    pub state: State,
    /// The link to give a node that logs in (its writer).
    pending_link: Option<Arc<Link>>,
}

impl Session {
    /// A session that will use `link` once logged in.
    pub fn new(hub: Arc<Hub>, link: Arc<Link>) -> Session {
        Session { hub, state: State::New, pending_link: Some(link) }
    }

    /// The hub.
    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    /// Whether TmtpRev was received (quit frames are sent only then, spec §3.4).
    pub fn rev_seen(&self) -> bool {
        !matches!(self.state, State::New)
    }

    /// Whether a node is logged in.
    pub fn online(&self) -> Option<&Online> {
        match &self.state {
            State::Online(o) => Some(o),
            _ => None,
        }
    }

    /// Op admission by state (spec §3.2).
    ///
    /// # Errors
    /// The quit for an op not allowed now.
    pub fn admit(&self, op: Op) -> Result<(), Quit> {
        match (&self.state, op) {
            (State::New, Op::TmtpRev) => Ok(()),
            (_, Op::TmtpRev) => Err(Quit::Repetition),
            (State::New, Op::Register | Op::Login) => Err(Quit::TmtpRevOmitted),
            (State::Rev, Op::Register | Op::Login) => Ok(()),
            (State::Online(_), Op::Register | Op::Login) => Err(Quit::Connected),
            (State::Online(_), _) => Ok(()),
            (_, _) => Err(Quit::Unauthenticated),
        }
    }

    /// Quits decided from the header alone, before any data is read (spec §5.5, §5.8,
    /// §5.9).
    ///
    /// # Errors
    /// The quit.
    pub fn before_data(h: &Header) -> Result<(), Quit> {
        match h.op {
            Op::Ping | Op::GroupInvite if h.datalen > MAX_TEXT_BYTES => Err(Quit::DataTooLong),
            Op::PostNotify if h.datalen <= h.notelen => Err(Quit::DataTooShort),
            Op::PostNotify if h.fornotself && h.targets.as_ref().is_none_or(Vec::is_empty) => {
                Err(Quit::RecipientListEmpty)
            }
            _ => Ok(()),
        }
    }

    /// Handles a request whose data (at most [`MAX_TEXT_BYTES`], or none) is `data`.
    /// Post and PostNotify go through [`Session::post`] instead.
    ///
    /// # Errors
    /// [`StoreError`]: the connection ends (the client retries; nothing half-done is
    /// acknowledged).
    pub async fn handle(&mut self, h: &Header, data: &[u8]) -> Result<Step, StoreError> {
        let hub = self.hub.clone();
        match h.op {
            Op::TmtpRev => {
                self.state = State::Rev;
                let mut f =
                    fields([("id", "1".into()), ("name", hub.settings.name.clone().into()), ("op", "tmtprev".into())]);
                let auth = &hub.settings.auth;
                if auth.kind != 0 {
                    f.insert("auth".into(), auth.kind.into());
                    let list: Vec<Value> = auth
                        .providers
                        .iter()
                        .map(|p| {
                            Value::Object(fields([
                                ("label", p.label.clone().into()),
                                ("login", p.login.clone().unwrap_or_default().into()),
                                ("token", p.token.clone().into()),
                            ]))
                        })
                        .collect();
                    f.insert("authby".into(), list.into());
                }
                Ok(Step::Reply(message::frame(&f)))
            }
            Op::Register => self.register(h).await,
            Op::Login => self.login(h).await,
            Op::Ack => {
                if let Some(o) = self.online() {
                    o.link.ack(h.id.clone().unwrap_or_default()).await;
                }
                Ok(Step::Reply(Vec::new()))
            }
            Op::Pulse => Ok(Step::Reply(Vec::new())),
            Op::Quit => Ok(Step::Quit(Quit::LogoutOk)),
            Op::UserEdit => self.user_edit(h).await,
            Op::OhiEdit => self.ohi_edit(h).await,
            Op::GroupInvite => self.group_invite(h, data).await,
            Op::GroupEdit => self.group_edit(h).await,
            Op::Ping => self.ping(h, data).await,
            Op::Post | Op::PostNotify => Ok(Step::Quit(Quit::InvalidHeader)),
        }
    }

    /// The logged-in node; `admit()` lets ops 3-12 through only when there is one.
    pub(crate) fn me(&self) -> Option<(Node, Arc<Link>)> {
        match &self.state {
            State::Online(o) => Some((o.key.clone(), o.link.clone())),
            _ => None,
        }
    }

    async fn register(&mut self, h: &Header) -> Result<Step, StoreError> {
        let hub = self.hub.clone();
        if !hub.settings.auth.providers.is_empty() && (hub.settings.auth.required || h.oidc.is_some()) {
            let ok = match h.oidc.as_ref().and_then(|o| o.id_token.as_deref()) {
                Some(token) => hub.oidc.verify(token),
                None => Err("no oidc token".into()),
            };
            if let Err(e) = &ok {
                tracing::info!(cause = %e, "registration refused");
                return Ok(Step::Quit(Quit::AuthenticationRequired));
            }
        }
        let credentials = match new_uid() {
            Ok(uid) => new_node_secret().await.map(|secret| (uid, secret)),
            Err(e) => Err(e),
        };
        let (uid, (nodeid, hash)) = match credentials {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(cause = %e, "register failed");
                return Ok(Step::Quit(Quit::RegisterFailure));
            }
        };
        let identity = match &h.oidc {
            Some(_) => hub.oidc_identity(h.oidc.as_ref().and_then(|o| o.id_token.as_deref())),
            None => None,
        };
        if let Err(e) = hub.store.tmtp_register(&uid, &hash, identity.as_deref()).await {
            tracing::error!(cause = %e, "register failed");
            return Ok(Step::Quit(Quit::RegisterFailure));
        }
        if let Ok(raw) = base32::decode(&nodeid) {
            hub.node_hashes.keep(&raw, &hash);
        }
        let alias = h.newalias.clone().unwrap_or_default();
        let error = if alias == "_" { None } else { add_alias(&hub, &uid, &alias).await? };
        let mut f = fields([("nodeid", nodeid.into()), ("op", "registered".into()), ("uid", uid.clone().into())]);
        if let Some(e) = error {
            f.insert("error".into(), e.into());
        }
        let mut out = message::frame(&f);
        let key = Node { uid: uid.clone(), num: 1 };
        let Some(link) = self.pending_link.take() else { return Ok(Step::Quit(Quit::Connected)) };
        if !hub.attach(&key, &link).await? {
            return Ok(Step::Quit(Quit::NodeConnected));
        }
        let acks = link.open_acks();
        out.extend_from_slice(&message::info(&hub.presence_for(&uid)));
        hub.stats.batch().update(Flag::Persistent, &["total", "registrations"], 1).send();
        self.state = State::Online(Online { key: key.clone(), link, ohi: false });
        Ok(Step::LoggedIn(out, key, acks))
    }

    async fn login(&mut self, h: &Header) -> Result<Step, StoreError> {
        let hub = self.hub.clone();
        let uid = h.uid.clone().unwrap_or_default();
        let Ok(raw) = base32::decode(h.node.as_deref().unwrap_or_default()) else {
            return Ok(Step::Quit(Quit::CorruptBase32));
        };
        if !is_uid_text(&uid) {
            return Ok(Step::Quit(Quit::LoginFailed));
        }
        let hash = match hub.node_hashes.hash(raw.clone()).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(cause = %e, "login failed");
                return Ok(Step::Quit(Quit::LoginFailed));
            }
        };
        let key = match hub.store.tmtp_node(&hash).await? {
            Some(node) if node.uid == uid => {
                hub.node_hashes.keep(&raw, &hash);
                node
            }
            _ => {
                hub.stats.failed("login", &uid);
                return Ok(Step::Quit(Quit::LoginFailed));
            }
        };
        let Some(link) = self.pending_link.take() else { return Ok(Step::Quit(Quit::Connected)) };
        if !hub.attach(&key, &link).await? {
            self.pending_link = Some(link);
            return Ok(Step::Quit(Quit::NodeConnected));
        }
        let acks = link.open_acks();
        let out = message::info(&hub.presence_for(&uid));
        self.state = State::Online(Online { key: key.clone(), link, ohi: false });
        // The `login` note to every node of the user, this one included (spec §5.2).
        let id = hub.next_id().await?;
        let mut f = standard("login", &uid, id, now_ms(), 0);
        f.insert("node".into(), "tbd".into());
        copy_data_fields(&mut f, h);
        let nodes = resolve(&hub, &key, &own(&uid), true).await?.unwrap_or_default();
        store_small(&hub, id, f, &[], b'M', nodes).await?;
        hub.stats.batch().update(Flag::Persistent, &["total", "logins"], 1).send();
        Ok(Step::LoggedIn(out, key, acks))
    }

    async fn user_edit(&mut self, h: &Header) -> Result<Step, StoreError> {
        let hub = self.hub.clone();
        let Some((key, _)) = self.me() else { return Ok(Step::Quit(Quit::Unauthenticated)) };
        let id = h.id.clone().unwrap_or_default();
        let mut f = match (&h.newalias, &h.newnode) {
            (Some(a), None) if !a.is_empty() => {
                if let Some(e) = add_alias(&hub, &key.uid, a).await? {
                    return Ok(Step::Reply(message::ack(&id, Some(&e), None)));
                }
                let mut f = standard("user", &key.uid, 0, 0, 0);
                f.insert("newalias".into(), a.clone().into());
                f
            }
            (None, Some(n)) if !n.is_empty() => {
                let (nodeid, hash) = match new_node_secret().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(cause = %e, "new node refused");
                        return Ok(Step::Reply(message::ack(&id, Some("AddNode: no node secret"), None)));
                    }
                };
                match hub.store.tmtp_add_node(&key.uid, &hash, key.num, hub.settings.max_nodes).await? {
                    AddNode::Added(_) => {}
                    AddNode::TooMany => {
                        let e = format!("AddNode: Exceeds {} nodes", hub.settings.max_nodes);
                        return Ok(Step::Reply(message::ack(&id, Some(&e), None)));
                    }
                }
                let mut f = standard("user", &key.uid, 0, 0, 0);
                f.insert("newnode".into(), n.clone().into());
                f.insert("nodeid".into(), nodeid.into());
                f
            }
            _ => return Ok(Step::Quit(Quit::InvalidHeader)),
        };
        let mid = hub.next_id().await?;
        f.insert("id".into(), wire_id(mid).into());
        f.insert("posted".into(), posted(now_ms()).into());
        copy_data_fields(&mut f, h);
        let nodes = resolve(&hub, &key, &own(&key.uid), true).await?.unwrap_or_default();
        store_small(&hub, mid, f, &[], b'E', nodes).await?;
        Ok(Step::Reply(message::ack(&id, None, None)))
    }

    async fn ohi_edit(&mut self, h: &Header) -> Result<Step, StoreError> {
        let hub = self.hub.clone();
        let Some((key, _)) = self.me() else { return Ok(Step::Quit(Quit::Unauthenticated)) };
        let id = h.id.clone().unwrap_or_default();
        let kind = h.kind.clone().unwrap_or_default();
        let on = match kind.as_str() {
            "init" | "add" => true,
            "drop" => false,
            _ => return Ok(Step::Quit(Quit::InvalidHeader)),
        };
        let targets = h.targets.clone().unwrap_or_default();
        // mnm checks each target in turn: the first one invalid or without an account
        // is the answer. The accounts before the first invalid one are asked at once.
        let valid = targets.iter().position(|t| !is_uid_text(&t.id)).unwrap_or(targets.len());
        let uids: Vec<&str> = targets[..valid].iter().map(|t| t.id.as_str()).collect();
        let known = hub.store.tmtp_users_among(&uids).await?;
        if let Some(t) = targets[..valid].iter().find(|t| !known.contains(&t.id)) {
            let e = format!("OpenNodes: iUid {} not found", t.id);
            return Ok(Step::Reply(message::ack(&id, Some(&e), None)));
        }
        if let Some(t) = targets.get(valid) {
            let e = format!("fetchUser: invalid string '{}'", t.id);
            return Ok(Step::Reply(message::ack(&id, Some(&e), None)));
        }
        if let State::Online(o) = &mut self.state
            && !o.ohi
        {
            o.ohi = true;
            hub.presence_join(&key.uid);
        }
        for t in &targets {
            if hub.presence_set(&key.uid, &t.id, on) {
                hub.notify_uid(&t.id, message::ohi(&key.uid, on));
            }
        }
        if kind != "init" {
            let mid = hub.next_id().await?;
            let mut f = standard("ohiedit", &key.uid, mid, now_ms(), 0);
            let list: Vec<Value> = targets
                .iter()
                .map(|t| Value::Object(fields([("Id", t.id.clone().into()), ("Type", t.kind.into())])))
                .collect();
            f.insert("for".into(), list.into());
            f.insert("type".into(), kind.into());
            let nodes = resolve(&hub, &key, &own(&key.uid), true).await?.unwrap_or_default();
            store_small(&hub, mid, f, &[], b'M', nodes).await?;
        }
        Ok(Step::Reply(message::ack(&id, None, None)))
    }

    async fn ping(&mut self, h: &Header, data: &[u8]) -> Result<Step, StoreError> {
        let hub = self.hub.clone();
        let Some((key, _)) = self.me() else { return Ok(Step::Quit(Quit::Unauthenticated)) };
        let id = h.id.clone().unwrap_or_default();
        let (from, to) = (h.from.clone().unwrap_or_default(), h.to.clone().unwrap_or_default());
        if from.len() > MAX_NAME || hub.store.tmtp_alias_owner(&from).await?.as_deref() != Some(key.uid.as_str()) {
            return Ok(Step::Reply(message::ack(&id, Some("from must identify sender"), None)));
        }
        let target = if to.len() > MAX_NAME { None } else { hub.store.tmtp_alias_owner(&to).await? };
        let Some(target) = target else {
            return Ok(Step::Reply(message::ack(&id, Some(&format!("Lookup: iAlias {to} not found")), None)));
        };
        let t = now_ms();
        let mid = hub.next_id().await?;
        let mut f = standard("ping", &key.uid, mid, t, data.len() as i64);
        f.insert("alias".into(), from.into());
        f.insert("to".into(), to.into());
        copy_data_fields(&mut f, h);
        let nodes = resolve(&hub, &key, &[Target { id: target, kind: 1 }], true).await?.unwrap_or_default();
        store_small(&hub, mid, f, data, b'M', nodes).await?;
        hub.stats.batch().update(Flag::Persistent, &["total", "pings"], 1).send();
        Ok(Step::Reply(message::ack(&id, None, Some((&wire_id(mid), &posted(t))))))
    }

    /// Finishes a Post or PostNotify whose data is `post` (and, for PostNotify, the
    /// notification `note`, posted at the given time), spec §5.7, §5.8. Both messages
    /// of a PostNotify are queued in one commit when they came whole.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn post(&mut self, h: &Header, post: Body, note: Option<(Body, i64)>) -> Result<Step, StoreError> {
        let hub = self.hub.clone();
        let Some((key, _)) = self.me() else { return Ok(Step::Quit(Quit::Unauthenticated)) };
        let id = h.id.clone().unwrap_or_default();
        let targets = h.targets.clone().unwrap_or_default();
        let (post_id, size) = (post.id(), post.size());
        let nodes = match resolve(&hub, &key, &targets, !h.fornotself).await? {
            Ok(n) => n,
            Err(e) => {
                post.discard(&hub).await?;
                if let Some((n, _)) = note {
                    n.discard(&hub).await?;
                }
                return Ok(Step::Reply(message::ack(&id, Some(&e), None)));
            }
        };
        let mut f = standard("delivery", &key.uid, post_id, now_ms(), size);
        copy_data_fields(&mut f, h);
        let Some((note, note_posted)) = note else {
            let p = f.get("posted").and_then(Value::as_str).unwrap_or_default().to_owned();
            queue_all(&hub, vec![Queueing { body: post, header: f, prio: b'M', nodes }]).await?;
            self.count_post(size);
            return Ok(Step::Reply(message::ack(&id, None, Some((&wire_id(post_id), &p)))));
        };
        let notefor = h.notefor.clone().unwrap_or_default();
        let k = targets.len() + notefor.len() + usize::from(!h.fornotself);
        f.insert("notify".into(), k.into());
        let mut all: Vec<Target> = notefor;
        all.extend(targets);
        let note_id = note.id();
        let mut nf = standard("notify", &key.uid, note_id, note_posted, note.size());
        if h.notehead != 0 {
            nf.insert("datahead".into(), h.notehead.into());
        }
        if h.notesum != 0 {
            nf.insert("datasum".into(), h.notesum.into());
        }
        nf.insert("postid".into(), wire_id(post_id).into());
        let post = Queueing { body: post, header: f, prio: b'M', nodes };
        match resolve(&hub, &key, &all, true).await? {
            Ok(nodes) => {
                queue_all(&hub, vec![post, Queueing { body: note, header: nf, prio: b'M', nodes }]).await?;
                self.count_post(size);
            }
            Err(e) => {
                // As mnm: the post is queued, the notification is not, and the ack says why.
                queue_all(&hub, vec![post]).await?;
                self.count_post(size);
                note.discard(&hub).await?;
                return Ok(Step::Reply(message::ack(&id, Some(&e), None)));
            }
        }
        Ok(Step::Reply(message::ack(&id, None, Some((&wire_id(post_id), &posted(note_posted))))))
    }

    fn count_post(&self, size: i64) {
        self.hub
            .stats
            .batch()
            .update(Flag::Persistent, &["total", "posts"], 1)
            .update(Flag::Persistent, &["total", "bytes-in"], size)
            .send();
    }

    /// The connection ended: the node goes offline; presence is released (spec §3.4,
    /// §9).
    pub fn finish(&mut self) {
        if let State::Online(o) = std::mem::take(&mut self.state) {
            o.link.closed.cancel();
            self.hub.detach(&o.key, &o.link);
            if o.ohi {
                for target in self.hub.presence_leave(&o.key.uid) {
                    self.hub.notify_uid(&target, message::ohi(&o.key.uid, false));
                }
            }
        }
    }
}
