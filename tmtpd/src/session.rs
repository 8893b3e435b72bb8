//! What each TMTP request does (spec/tmtp.md §3, §5, §7, §10), given the bytes of its
//! data: admission by connection state, the op's checks and effects in the store, the
//! replies, and the messages it queues. No sockets here: the connection loop
//! ([`crate::conn`]) reads frames and streams post data through [`Upload`].

use std::sync::Arc;

use common::StoreError;
use common::stats::Flag;
use common::store::{AliasError, NodeError};
use serde_json::Value;

use crate::hub::{Hub, Link, NodeKey, now_ms};
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
    pub key: NodeKey,
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
    LoggedIn(Vec<u8>, NodeKey, tokio::sync::mpsc::Receiver<String>),
    /// Write the quit frame (if TmtpRev was seen) and close.
    Quit(Quit),
}

/// Refusals that stay inside an ack (`error` text).
type Soft = String;

fn is_uid_text(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'%')
}

/// mnm's "printable" (spec §10.4): letters, marks, numbers, punctuation, symbols and the
/// ASCII space; no other white space, controls or U+FFFD.
fn printable(s: &str) -> bool {
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
fn standard(op: &str, from: &str, id: i64, posted_ms: i64, datalen: i64) -> Fields {
    fields([
        ("op", op.into()),
        ("id", wire_id(id).into()),
        ("from", from.into()),
        ("posted", posted(posted_ms).into()),
        ("datalen", datalen.into()),
    ])
}

/// Copies `datahead`/`datasum` from the request when non-zero (spec §4.2 quirk).
fn copy_data_fields(f: &mut Fields, h: &Header) {
    if h.datahead != 0 {
        f.insert("datahead".into(), h.datahead.into());
    }
    if h.datasum != 0 {
        f.insert("datasum".into(), h.datasum.into());
    }
}

/// An upload of post data in progress: chunks go to the store as they arrive.
pub struct Upload {
    /// The message id.
    pub id: i64,
    seq: i64,
    /// Bytes stored.
    pub size: i64,
}

impl Upload {
    /// Starts message `id`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn begin(hub: &Hub, id: i64) -> Result<Upload, StoreError> {
        hub.store.tmtp_begin_message(id).await?;
        Ok(Upload { id, seq: 0, size: 0 })
    }

    /// Stores the next chunk.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn put(&mut self, hub: &Hub, data: &[u8]) -> Result<(), StoreError> {
        if data.is_empty() {
            return Ok(());
        }
        hub.store.tmtp_put_chunk(self.id, self.seq, data).await?;
        self.seq += 1;
        self.size += data.len() as i64;
        Ok(())
    }
}

/// Stores a message with its data in one go and wakes its recipients.
async fn store_small(
    hub: &Hub,
    id: i64,
    header: Fields,
    data: &[u8],
    prio: &str,
    nodes: &[NodeKey],
) -> Result<(), StoreError> {
    let mut up = Upload::begin(hub, id).await?;
    up.put(hub, data).await?;
    commit(hub, up, header, prio, nodes).await
}

/// Makes an upload deliverable to `nodes` and wakes them.
async fn commit(hub: &Hub, up: Upload, header: Fields, prio: &str, nodes: &[NodeKey]) -> Result<(), StoreError> {
    let frame = with_headsum(header);
    hub.store.tmtp_commit_message(up.id, &frame, up.size, prio, nodes).await?;
    hub.wake(nodes);
    Ok(())
}

/// Recipient resolution (spec §7): the nodes to queue to, or the ack error.
async fn resolve(
    hub: &Hub,
    sender: &NodeKey,
    targets: &[Target],
    with_self: bool,
) -> Result<Result<Vec<NodeKey>, Soft>, StoreError> {
    let s = &sender.0;
    // Nodes of groups come in one query each; uids named directly are looked up below.
    let mut nodes: std::collections::BTreeSet<NodeKey> = std::collections::BTreeSet::new();
    let mut uids: Vec<String> = Vec::new();
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
                if !members.iter().any(|m| &m.uid == s && (m.status == 1 || m.status == 2)) {
                    return Ok(Err(format!("GroupGetUsers: iByUid {s} not a member")));
                }
                if t.kind == 2 && members.iter().any(|m| &m.uid == s && m.status == 2) {
                    reached = true;
                }
                let group = hub.store.tmtp_group_nodes(&t.id).await?;
                nodes.extend(group.into_iter().filter(|(u, _)| t.kind == 2 || u != s));
            }
            _ => {
                if !is_uid_text(&t.id) {
                    return Ok(Err(format!("fetchUser: invalid string '{}'", t.id)));
                }
                if !hub.store.tmtp_user_exists(&t.id).await? {
                    return Ok(Err(format!("OpenNodes: iUid {} not found", t.id)));
                }
                if &t.id == s {
                    reached = true;
                }
                uids.push(t.id.clone());
            }
        }
    }
    if with_self {
        uids.push(s.clone());
    }
    uids.sort();
    uids.dedup();
    for u in uids {
        for n in hub.store.tmtp_nodes(&u).await? {
            nodes.insert((u.clone(), n));
        }
    }
    if !reached {
        nodes.remove(sender);
    }
    Ok(Ok(nodes.into_iter().collect()))
}

fn own(uid: &str) -> Vec<Target> {
    vec![Target { id: uid.to_owned(), kind: 1 }]
}

/// Adds an alias with mnm's checks and texts (spec §5.3, §10.4).
async fn add_alias(hub: &Hub, uid: &str, alias: &str) -> Result<Option<Soft>, StoreError> {
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
        Ok(()) => None,
        Err(AliasError::Taken) => Some(format!("AddAlias: alias {alias} already taken")),
        Err(AliasError::NotAvailable) => Some(format!("AddAlias: alias {alias} not available")),
    })
}

/// A new node secret: (the 40-character nodeid, its stored hash).
async fn new_node_secret() -> (String, String) {
    let mut raw = [0u8; 25];
    if getrandom::fill(&mut raw).is_err() {
        let id = common::random_hex(25);
        raw.copy_from_slice(&id.as_bytes()[..25]);
    }
    let nodeid = base32::encode(&raw);
    let hash = tokio::task::spawn_blocking(move || base32::node_hash(&raw)).await.unwrap_or_default();
    (nodeid, hash)
}

fn new_uid() -> String {
    let mut raw = [0u8; 20];
    if getrandom::fill(&mut raw).is_err() {
        raw.copy_from_slice(&common::random_hex(10).as_bytes()[..20]);
    }
    base32::encode(&raw)
}

/// The connection's request handler.
pub struct Session {
    hub: Arc<Hub>,
    /// Where the connection is.
    pub state: State,
    /// The link to give a node that logs in (its writer).
    pending_link: Option<(Arc<Link>, tokio::sync::mpsc::Receiver<String>)>,
}

impl Session {
    /// A session that will use `link` once logged in.
    pub fn new(hub: Arc<Hub>, link: Arc<Link>, acks: tokio::sync::mpsc::Receiver<String>) -> Session {
        Session { hub, state: State::New, pending_link: Some((link, acks)) }
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
                    let id = h.id.clone().unwrap_or_default();
                    // mnm waits up to 2 s for room, then drops the ack (spec §8.3).
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), o.link.acks.send(id)).await;
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
    fn me(&self) -> Option<(NodeKey, Arc<Link>)> {
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
        let uid = new_uid();
        let (nodeid, hash) = new_node_secret().await;
        let identity = match &h.oidc {
            Some(_) => hub.oidc_identity(h.oidc.as_ref().and_then(|o| o.id_token.as_deref())),
            None => None,
        };
        if let Err(e) = hub.store.tmtp_register(&uid, &hash, identity.as_deref()).await {
            tracing::error!(cause = %e, "register failed");
            return Ok(Step::Quit(Quit::RegisterFailure));
        }
        let alias = h.newalias.clone().unwrap_or_default();
        let error = if alias == "_" { None } else { add_alias(&hub, &uid, &alias).await? };
        let mut f = fields([("nodeid", nodeid.into()), ("op", "registered".into()), ("uid", uid.clone().into())]);
        if let Some(e) = error {
            f.insert("error".into(), e.into());
        }
        let mut out = message::frame(&f);
        let key = (uid.clone(), 1);
        let Some((link, acks)) = self.pending_link.take() else { return Ok(Step::Quit(Quit::Connected)) };
        if !hub.attach(&key, &link) {
            return Ok(Step::Quit(Quit::NodeConnected));
        }
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
        let hash = tokio::task::spawn_blocking(move || base32::node_hash(&raw)).await.unwrap_or_default();
        if !is_uid_text(&uid) {
            return Ok(Step::Quit(Quit::LoginFailed));
        }
        let key = match hub.store.tmtp_node(&hash).await? {
            Some((u, n)) if u == uid => (u, n),
            _ => {
                hub.stats.failed("login", &uid);
                return Ok(Step::Quit(Quit::LoginFailed));
            }
        };
        let Some((link, acks)) = self.pending_link.take() else { return Ok(Step::Quit(Quit::Connected)) };
        if !hub.attach(&key, &link) {
            self.pending_link = Some((link, acks));
            return Ok(Step::Quit(Quit::NodeConnected));
        }
        let out = message::info(&hub.presence_for(&uid));
        self.state = State::Online(Online { key: key.clone(), link, ohi: false });
        // The `login` note to every node of the user, this one included (spec §5.2).
        let id = hub.next_id() as i64;
        let mut f = standard("login", &uid, id, now_ms(), 0);
        f.insert("node".into(), "tbd".into());
        copy_data_fields(&mut f, h);
        let nodes = resolve(&hub, &key, &own(&uid), true).await?.unwrap_or_default();
        store_small(&hub, id, f, &[], "M", &nodes).await?;
        hub.stats.batch().update(Flag::Persistent, &["total", "logins"], 1).send();
        Ok(Step::LoggedIn(out, key, acks))
    }

    async fn user_edit(&mut self, h: &Header) -> Result<Step, StoreError> {
        let hub = self.hub.clone();
        let Some((key, _)) = self.me() else { return Ok(Step::Quit(Quit::Unauthenticated)) };
        let id = h.id.clone().unwrap_or_default();
        let mut f = match (&h.newalias, &h.newnode) {
            (Some(a), None) if !a.is_empty() => {
                if let Some(e) = add_alias(&hub, &key.0, a).await? {
                    return Ok(Step::Reply(message::ack(&id, Some(&e), None)));
                }
                let mut f = standard("user", &key.0, 0, 0, 0);
                f.insert("newalias".into(), a.clone().into());
                f
            }
            (None, Some(n)) if !n.is_empty() => {
                let (nodeid, hash) = new_node_secret().await;
                match hub.store.tmtp_add_node(&key.0, &hash, key.1, hub.settings.max_nodes).await? {
                    Ok(_) => {}
                    Err(NodeError::TooMany) => {
                        let e = format!("AddNode: Exceeds {} nodes", hub.settings.max_nodes);
                        return Ok(Step::Reply(message::ack(&id, Some(&e), None)));
                    }
                }
                let mut f = standard("user", &key.0, 0, 0, 0);
                f.insert("newnode".into(), n.clone().into());
                f.insert("nodeid".into(), nodeid.into());
                f
            }
            _ => return Ok(Step::Quit(Quit::InvalidHeader)),
        };
        let mid = hub.next_id() as i64;
        f.insert("id".into(), wire_id(mid).into());
        f.insert("posted".into(), posted(now_ms()).into());
        copy_data_fields(&mut f, h);
        let nodes = resolve(&hub, &key, &own(&key.0), true).await?.unwrap_or_default();
        store_small(&hub, mid, f, &[], "E", &nodes).await?;
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
        for t in &targets {
            if !is_uid_text(&t.id) {
                let e = format!("fetchUser: invalid string '{}'", t.id);
                return Ok(Step::Reply(message::ack(&id, Some(&e), None)));
            }
            if !hub.store.tmtp_user_exists(&t.id).await? {
                let e = format!("OpenNodes: iUid {} not found", t.id);
                return Ok(Step::Reply(message::ack(&id, Some(&e), None)));
            }
        }
        if let State::Online(o) = &mut self.state
            && !o.ohi
        {
            o.ohi = true;
            hub.presence_join(&key.0);
        }
        for t in &targets {
            if hub.presence_set(&key.0, &t.id, on) {
                hub.notify_uid(&t.id, message::ohi(&key.0, on));
            }
        }
        if kind != "init" {
            let mid = hub.next_id() as i64;
            let mut f = standard("ohiedit", &key.0, mid, now_ms(), 0);
            let list: Vec<Value> = targets
                .iter()
                .map(|t| Value::Object(fields([("Id", t.id.clone().into()), ("Type", t.kind.into())])))
                .collect();
            f.insert("for".into(), list.into());
            f.insert("type".into(), kind.into());
            let nodes = resolve(&hub, &key, &own(&key.0), true).await?.unwrap_or_default();
            store_small(&hub, mid, f, &[], "M", &nodes).await?;
        }
        Ok(Step::Reply(message::ack(&id, None, None)))
    }

    async fn group_invite(&mut self, h: &Header, data: &[u8]) -> Result<Step, StoreError> {
        let hub = self.hub.clone();
        let Some((key, _)) = self.me() else { return Ok(Step::Quit(Quit::Unauthenticated)) };
        let uid = key.0.clone();
        let id = h.id.clone().unwrap_or_default();
        let (gid, from, to) =
            (h.gid.clone().unwrap_or_default(), h.from.clone().unwrap_or_default(), h.to.clone().unwrap_or_default());
        let soft = |e: String| Ok(Step::Reply(message::ack(&id, Some(&e), None)));
        if gid.len() < MIN_NAME {
            return soft("gid must be 8+ characters".into());
        }
        if hub.store.tmtp_alias_owner(&from).await?.as_deref() != Some(uid.as_str()) {
            return soft(format!("GroupInvite: iByAlias {from} not for iByUid {uid}"));
        }
        let Some(invitee) = hub.store.tmtp_alias_owner(&to).await? else {
            return soft(format!("GroupInvite: iAlias {to} not found"));
        };
        if hub.store.tmtp_alias_owner(&gid).await?.is_some() || gid.len() > MAX_NAME {
            return soft(format!("GroupInvite: gid {gid} not available"));
        }
        if !printable(&gid) {
            return soft(format!("GroupInvite: invalid string '{gid}'"));
        }
        let members = hub.store.tmtp_members(&gid).await?;
        let mut rows: Vec<(String, String, i64)> = Vec::new();
        if members.is_empty() {
            rows.push((uid.clone(), from.clone(), 2));
        } else {
            if !members.iter().any(|m| m.uid == uid && m.status == 2) {
                return soft(format!("GroupInvite: iByUid {uid} not a member"));
            }
            if members.iter().any(|m| m.uid == invitee && m.status == 2) {
                return soft(format!("GroupInvite: iAlias {to} already joined"));
            }
        }
        rows.push((invitee.clone(), to.clone(), 1));
        let rows_ref: Vec<(&str, &str, i64)> = rows.iter().map(|(u, a, s)| (u.as_str(), a.as_str(), *s)).collect();
        hub.store.tmtp_set_members(&gid, &rows_ref).await?;

        let t = now_ms();
        let inv = hub.next_id() as i64;
        let mut f = standard("invite", &uid, inv, t, data.len() as i64);
        for (k, v) in [("alias", from.clone()), ("gid", gid.clone()), ("to", to.clone())] {
            f.insert(k.into(), v.into());
        }
        copy_data_fields(&mut f, h);
        let nodes = resolve(&hub, &key, &[Target { id: invitee, kind: 1 }], true).await?.unwrap_or_default();
        store_small(&hub, inv, f, data, "M", &nodes).await?;
        let mem = hub.next_id() as i64;
        let mut f = standard("member", &uid, mem, now_ms(), 0);
        for (k, v) in [("act", "invite".to_owned()), ("alias", to), ("gid", gid.clone())] {
            f.insert(k.into(), v.into());
        }
        let nodes = match resolve(&hub, &key, &[Target { id: gid, kind: 2 }], true).await? {
            Ok(n) => n,
            Err(_) => resolve(&hub, &key, &[], true).await?.unwrap_or_default(),
        };
        store_small(&hub, mem, f, &[], "M", &nodes).await?;
        Ok(Step::Reply(message::ack(&id, None, Some((&wire_id(inv), &posted(t))))))
    }

    async fn group_edit(&mut self, h: &Header) -> Result<Step, StoreError> {
        let hub = self.hub.clone();
        let Some((key, _)) = self.me() else { return Ok(Step::Quit(Quit::Unauthenticated)) };
        let uid = key.0.clone();
        let id = h.id.clone().unwrap_or_default();
        let gid = h.gid.clone().unwrap_or_default();
        let act = h.act.clone().unwrap_or_default();
        let newalias = h.newalias.clone().filter(|a| !a.is_empty());
        let to = h.to.clone().filter(|a| !a.is_empty());
        match act.as_str() {
            "join" => {}
            "alias" if newalias.is_some() => {}
            "drop" if to.is_some() => {}
            _ => return Ok(Step::Quit(Quit::InvalidHeader)),
        }
        let soft = |e: String| Ok(Step::Reply(message::ack(&id, Some(&e), None)));
        let members = if gid.len() > MAX_NAME { Vec::new() } else { hub.store.tmtp_members(&gid).await? };
        let mine = members.iter().find(|m| m.uid == uid).cloned();
        let owns = |alias: &str| {
            let hub = hub.clone();
            let alias = alias.to_owned();
            let uid = uid.clone();
            async move { Ok::<bool, StoreError>(hub.store.tmtp_alias_owner(&alias).await?.as_deref() == Some(uid.as_str())) }
        };
        let mut extra_target: Option<String> = None;
        let (alias_shown, new_shown) = match act.as_str() {
            "join" => {
                let what = "GroupJoin";
                if members.is_empty() {
                    return soft(format!("{what}: iGid {gid} not found"));
                }
                let Some(m) = mine.filter(|m| m.status == 1 || m.status == 2) else {
                    return soft(format!("{what}: iUid {uid} not invited"));
                };
                let alias = match &newalias {
                    Some(a) if a != &m.alias => {
                        if !owns(a).await? {
                            return soft(format!("{what}: iNewAlias {a} not for iUid {uid}"));
                        }
                        a.clone()
                    }
                    _ => m.alias.clone(),
                };
                hub.store.tmtp_set_members(&gid, &[(&uid, &alias, 2)]).await?;
                (alias, None)
            }
            "alias" => {
                let what = "GroupAlias";
                let a = newalias.clone().unwrap_or_default();
                if members.is_empty() {
                    return soft(format!("{what}: iGid {gid} not found"));
                }
                let Some(m) = mine.filter(|m| m.status == 2) else {
                    return soft(format!("{what}: iUid {uid} not a member"));
                };
                if a != m.alias {
                    if !owns(&a).await? {
                        return soft(format!("{what}: iNewAlias {a} not for iUid {uid}"));
                    }
                    hub.store.tmtp_set_members(&gid, &[(&uid, &a, 2)]).await?;
                }
                (m.alias, Some(a))
            }
            _ => {
                let what = "GroupQuit";
                let to = to.clone().unwrap_or_default();
                if members.is_empty() {
                    return soft(format!("{what}: iGid {gid} not found"));
                }
                let target_uid = hub.store.tmtp_alias_owner(&to).await?;
                let Some(target) =
                    target_uid.and_then(|t| members.iter().find(|m| m.uid == t && m.alias == to).cloned())
                else {
                    return soft(format!("{what}: iAlias {to} not a member"));
                };
                if target.uid == uid {
                    if target.status == 2 {
                        hub.store.tmtp_set_members(&gid, &[(&uid, &to, 1)]).await?;
                    }
                } else {
                    if mine.is_none_or(|m| m.status != 2) {
                        return soft(format!("{what}: iByUid {uid} not a member"));
                    }
                    if target.status != 3 {
                        hub.store.tmtp_set_members(&gid, &[(&target.uid, &to, 3)]).await?;
                    }
                }
                extra_target = Some(target.uid);
                (to, None)
            }
        };
        let mid = hub.next_id() as i64;
        let mut f = standard("member", &uid, mid, now_ms(), 0);
        f.insert("act".into(), act.clone().into());
        f.insert("alias".into(), alias_shown.into());
        f.insert("gid".into(), gid.clone().into());
        if let Some(n) = new_shown {
            f.insert("newalias".into(), n.into());
        }
        let mut targets = vec![Target { id: gid, kind: 2 }];
        if let Some(t) = extra_target {
            targets.push(Target { id: t, kind: 1 });
        }
        let nodes = match resolve(&hub, &key, &targets, true).await? {
            Ok(n) => n,
            // After a self-drop the sender may no longer be a joined member.
            Err(_) => resolve(&hub, &key, &targets[1..], true).await?.unwrap_or_default(),
        };
        store_small(&hub, mid, f, &[], "M", &nodes).await?;
        Ok(Step::Reply(message::ack(&id, None, None)))
    }

    async fn ping(&mut self, h: &Header, data: &[u8]) -> Result<Step, StoreError> {
        let hub = self.hub.clone();
        let Some((key, _)) = self.me() else { return Ok(Step::Quit(Quit::Unauthenticated)) };
        let id = h.id.clone().unwrap_or_default();
        let (from, to) = (h.from.clone().unwrap_or_default(), h.to.clone().unwrap_or_default());
        if from.len() > MAX_NAME || hub.store.tmtp_alias_owner(&from).await?.as_deref() != Some(key.0.as_str()) {
            return Ok(Step::Reply(message::ack(&id, Some("from must identify sender"), None)));
        }
        let target = if to.len() > MAX_NAME { None } else { hub.store.tmtp_alias_owner(&to).await? };
        let Some(target) = target else {
            return Ok(Step::Reply(message::ack(&id, Some(&format!("Lookup: iAlias {to} not found")), None)));
        };
        let t = now_ms();
        let mid = hub.next_id() as i64;
        let mut f = standard("ping", &key.0, mid, t, data.len() as i64);
        f.insert("alias".into(), from.into());
        f.insert("to".into(), to.into());
        copy_data_fields(&mut f, h);
        let nodes = resolve(&hub, &key, &[Target { id: target, kind: 1 }], true).await?.unwrap_or_default();
        store_small(&hub, mid, f, data, "M", &nodes).await?;
        hub.stats.batch().update(Flag::Persistent, &["total", "pings"], 1).send();
        Ok(Step::Reply(message::ack(&id, None, Some((&wire_id(mid), &posted(t))))))
    }

    /// Finishes a Post or PostNotify whose data went into `post` (and, for PostNotify,
    /// the notification into `note`), spec §5.7, §5.8.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn post(&mut self, h: &Header, post: Upload, note: Option<(Upload, i64)>) -> Result<Step, StoreError> {
        let hub = self.hub.clone();
        let Some((key, _)) = self.me() else { return Ok(Step::Quit(Quit::Unauthenticated)) };
        let id = h.id.clone().unwrap_or_default();
        let targets = h.targets.clone().unwrap_or_default();
        let (post_id, size) = (post.id, post.size);
        let nodes = match resolve(&hub, &key, &targets, !h.fornotself).await? {
            Ok(n) => n,
            Err(e) => {
                hub.store.tmtp_discard(post_id).await?;
                if let Some((n, _)) = note {
                    hub.store.tmtp_discard(n.id).await?;
                }
                return Ok(Step::Reply(message::ack(&id, Some(&e), None)));
            }
        };
        let mut f = standard("delivery", &key.0, post_id, now_ms(), size);
        copy_data_fields(&mut f, h);
        let Some((note, note_posted)) = note else {
            let p = f.get("posted").cloned().unwrap_or_default();
            commit(&hub, post, f, "M", &nodes).await?;
            self.count_post(size);
            let p = p.as_str().unwrap_or_default().to_owned();
            return Ok(Step::Reply(message::ack(&id, None, Some((&wire_id(post_id), &p)))));
        };
        let notefor = h.notefor.clone().unwrap_or_default();
        let k = targets.len() + notefor.len() + usize::from(!h.fornotself);
        f.insert("notify".into(), k.into());
        commit(&hub, post, f, "M", &nodes).await?;
        self.count_post(size);
        let mut all: Vec<Target> = notefor;
        all.extend(targets);
        let note_id = note.id;
        let mut nf = standard("notify", &key.0, note_id, note_posted, note.size);
        if h.notehead != 0 {
            nf.insert("datahead".into(), h.notehead.into());
        }
        if h.notesum != 0 {
            nf.insert("datasum".into(), h.notesum.into());
        }
        nf.insert("postid".into(), wire_id(post_id).into());
        match resolve(&hub, &key, &all, true).await? {
            Ok(nodes) => commit(&hub, note, nf, "M", &nodes).await?,
            Err(e) => {
                hub.store.tmtp_discard(note_id).await?;
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
                for target in self.hub.presence_leave(&o.key.0) {
                    self.hub.notify_uid(&target, message::ohi(&o.key.0, false));
                }
            }
        }
    }
}

/// An administrator's change, made directly in the store (`mmtmtpd admin`).
#[derive(Clone, Debug)]
pub enum AdminRequest {
    /// A new account with `nodes` nodes.
    AddUser {
        /// The uid, or a random one.
        uid: Option<String>,
        /// How many nodes.
        nodes: u32,
    },
    /// One more node.
    AddNode {
        /// The account.
        uid: String,
    },
    /// An alias.
    AddAlias {
        /// The alias.
        alias: String,
        /// The account.
        uid: String,
    },
    /// A group member.
    SetMember {
        /// Group id.
        gid: String,
        /// Account.
        uid: String,
        /// Recorded alias.
        alias: String,
        /// `invited`, `joined` or `barred`.
        status: String,
    },
}

/// Runs an [`AdminRequest`], printing uids and node secrets on standard output.
///
/// # Errors
/// Invalid names, unknown accounts, taken aliases, database failures.
pub async fn admin(store: &common::Store, req: AdminRequest) -> anyhow::Result<()> {
    match req {
        AdminRequest::AddUser { uid, nodes } => {
            let uid = uid.unwrap_or_else(new_uid);
            anyhow::ensure!(is_uid_text(&uid), "a uid is 1-64 letters, digits, '+' or '%'");
            anyhow::ensure!(nodes >= 1, "an account needs a node");
            let (nodeid, hash) = new_node_secret().await;
            store.tmtp_register(&uid, &hash, None).await?;
            println!("{uid}");
            println!("{nodeid}");
            for _ in 1..nodes {
                let (nodeid, hash) = new_node_secret().await;
                store.tmtp_add_node(&uid, &hash, 1, 1000).await?.map_err(|_| anyhow::anyhow!("too many nodes"))?;
                println!("{nodeid}");
            }
        }
        AdminRequest::AddNode { uid } => {
            anyhow::ensure!(store.tmtp_user_exists(&uid).await?, "no account {uid}");
            let (nodeid, hash) = new_node_secret().await;
            store.tmtp_add_node(&uid, &hash, 1, 1000).await?.map_err(|_| anyhow::anyhow!("too many nodes"))?;
            println!("{nodeid}");
        }
        AdminRequest::AddAlias { alias, uid } => {
            anyhow::ensure!(store.tmtp_user_exists(&uid).await?, "no account {uid}");
            anyhow::ensure!(
                !alias.is_empty() && alias.len() <= MAX_NAME && printable(&alias),
                "invalid alias {alias:?}"
            );
            match store.tmtp_add_alias(&uid, &alias).await? {
                Ok(()) => {}
                Err(AliasError::Taken) => anyhow::bail!("alias {alias} already taken"),
                Err(AliasError::NotAvailable) => anyhow::bail!("alias {alias} not available (a group has that id)"),
            }
        }
        AdminRequest::SetMember { gid, uid, alias, status } => {
            let status = match status.as_str() {
                "invited" => 1,
                "joined" => 2,
                "barred" => 3,
                _ => anyhow::bail!("status is invited, joined or barred"),
            };
            anyhow::ensure!(store.tmtp_user_exists(&uid).await?, "no account {uid}");
            anyhow::ensure!(!gid.is_empty() && gid.len() <= MAX_NAME && printable(&gid), "invalid gid {gid:?}");
            anyhow::ensure!(store.tmtp_alias_owner(&gid).await?.is_none(), "gid {gid} is an alias");
            store.tmtp_set_members(&gid, &[(&uid, &alias, status)]).await?;
        }
    }
    Ok(())
}
