//! What all connections of one mmtmtpd share (spec/tmtp.md §8, §9): the store, the
//! message id counter, the connection table (which node is online on which link), and
//! presence. Only the connection table and presence live in memory (presence is
//! in-memory in mnm too); queues and messages are in the database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::stats::Stats;
use common::store::{Node, Store};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Auth;

/// Settings of the running daemon.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `tmtprev.name`.
    pub name: String,
    /// Processed `auth`/`authby`.
    pub auth: Auth,
    /// Login deadline from accept.
    pub login_timeout: Duration,
    /// Silence allowed once logged in; also the write timeout of a link.
    pub idle_timeout: Duration,
    /// Wait for an Ack before resending.
    pub ack_timeout: Duration,
    /// Live nodes per user.
    pub max_nodes: i64,
    /// How long a node's link is held in the database without renewal.
    pub link_lease: Duration,
    /// Between looks for work other instances left (MySQL/MariaDB, SQLite).
    pub wake_poll: Duration,
    /// This instance's name in the database.
    pub instance: String,
}

/// The writing side of a connection.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A message just committed for nodes online here, as their queues learn of it from
/// memory: its place in their order, and, when it is small and came whole, the frame
/// itself, which the link then writes without reading it back from the database.
#[derive(Debug)]
pub struct Outgoing {
    /// The queue priority: `b'E'` or `b'M'` (spec/tmtp.md §4.5).
    pub prio: u8,
    /// The message id.
    pub id: i64,
    /// The whole frame (length digits, JSON header, data) when at most
    /// [`crate::session::HAND_MAX`] bytes; `None` for a larger one, read from the
    /// database when its turn comes (a recipient with a long queue would otherwise hold
    /// it in memory all that time).
    pub frame: Option<Arc<[u8]>>,
}

/// A logged-in connection, as the rest of the daemon sees it.
pub struct Link {
    /// The only way to write to the connection: a frame is written whole while held.
    pub writer: tokio::sync::Mutex<Writer>,
    /// Woken when a message is queued for this node (in the inbox or in the database).
    pub wake: Notify,
    /// Messages committed for this node since its queue last looked, in memory.
    inbox: Mutex<Vec<Arc<Outgoing>>>,
    /// Set when the database holds messages for this node that the inbox does not (a
    /// streamed post, or one stored by another instance): the queue reads them.
    stale: AtomicBool,
    /// Ids the client acknowledged (op 10), for the node's queue; opened at login
    /// ([`Link::open_acks`]), so that a connection that never logs in does not pay for a
    /// channel (about 1.3 KB: its first block of slots and its shared state).
    acks: std::sync::OnceLock<mpsc::Sender<String>>,
    /// Cancelled when the connection ends (or must end: a write failed).
    pub closed: CancellationToken,
    /// Which link of this instance it is: its row in `tmtp_link` names it.
    pub token: i64,
    write_timeout: Duration,
}

/// Tokens of links, unique within the process.
static TOKENS: AtomicI64 = AtomicI64::new(0);

impl Link {
    /// A link writing to `writer`, with a write timeout of `write_timeout`.
    pub fn new(writer: Writer, write_timeout: Duration) -> Arc<Link> {
        Arc::new(Link {
            writer: tokio::sync::Mutex::new(writer),
            wake: Notify::new(),
            inbox: Mutex::default(),
            stale: AtomicBool::new(false),
            acks: std::sync::OnceLock::new(),
            closed: CancellationToken::new(),
            token: TOKENS.fetch_add(1, Ordering::Relaxed) + 1,
            write_timeout,
        })
    }

    /// Opens the channel of the client's acks at login and returns its receiving end,
    /// for the node's queue. A link logs in once; a second call returns a receiver
    /// that gets nothing.
    pub fn open_acks(&self) -> mpsc::Receiver<String> {
        // mnm: a 10-slot buffer (spec §8.3).
        let (tx, rx) = mpsc::channel(10);
        let _ = self.acks.set(tx);
        rx
    }

    /// Passes the id of a client's ack (op 10) to the node's queue: mnm waits up to 2 s
    /// for room in the 10-slot buffer, then drops the ack (spec §8.3), which only makes
    /// the message be sent again. Nothing before login ([`Link::open_acks`]).
    pub async fn ack(&self, id: String) {
        if let Some(tx) = self.acks.get() {
            let _ = tokio::time::timeout(Duration::from_secs(2), tx.send(id)).await;
        }
    }

    /// Hands `message` (committed for this node) to the queue.
    pub fn hand(&self, message: Arc<Outgoing>) {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner()).push(message);
        self.wake.notify_one();
    }

    /// Tells the queue that the database holds messages for it that it was not handed.
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The messages handed since the last call.
    pub fn take_inbox(&self) -> Vec<Arc<Outgoing>> {
        std::mem::take(&mut *self.inbox.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether the queue must read the database (and clears the mark).
    pub fn take_stale(&self) -> bool {
        self.stale.swap(false, Ordering::AcqRel)
    }

    /// Closes the link: no more writes, and the socket is shut down now (the node's
    /// queue may still hold the link for a moment).
    pub async fn close(&self) {
        self.closed.cancel();
        let mut w = self.writer.lock().await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), w.shutdown()).await;
    }

    /// Writes whole frames (already concatenated) under the lock; a failure or a write
    /// that takes longer than the write timeout ends the link.
    pub async fn send(&self, bytes: &[u8]) -> bool {
        let mut w = self.writer.lock().await;
        self.write_locked(&mut w, bytes).await
    }

    /// Writes `bytes` with the lock already held; nothing once the link is closed.
    pub async fn write_locked(&self, w: &mut Writer, bytes: &[u8]) -> bool {
        if self.closed.is_cancelled() {
            return false;
        }
        let done = tokio::time::timeout(self.write_timeout, async {
            w.write_all(bytes).await?;
            w.flush().await
        })
        .await;
        if !matches!(done, Ok(Ok(()))) {
            self.closed.cancel();
            return false;
        }
        true
    }
}

#[derive(Default)]
struct Presence {
    /// Connections of this user that issued OhiEdit.
    refs: u32,
    /// uid -> whether it is told this user is online.
    on: HashMap<String, bool>,
}

/// The shared state.
pub struct Hub {
    /// The database.
    pub store: Store,
    /// Settings.
    pub settings: Settings,
    /// Counters.
    pub stats: Stats,
    /// OpenID Connect token checks.
    pub oidc: crate::oidc::Verifier,
    /// The last id handed out and the end (exclusive) of the block it is from.
    ids: Mutex<(i64, i64)>,
    /// Held while a new block of ids is taken.
    refill: tokio::sync::Mutex<()>,
    /// The nodes' queue tasks and the `ohi` writers: shutdown waits for them.
    pub tasks: TaskTracker,
    links: Mutex<HashMap<Node, Arc<Link>>>,
    presence: Mutex<HashMap<String, Presence>>,
    /// Recipient acks on their way to the database (see [`Hub::ack`]).
    acks: mpsc::UnboundedSender<(Node, i64)>,
    /// Whether another instance on the database has nodes connected (looked at every
    /// second): only then does queueing look for recipients there, and do `ohi` notes
    /// go out to other instances.
    others: AtomicBool,
    /// `ohi` notes for other instances, written by [`share`] one after another.
    outbox: mpsc::UnboundedSender<Note>,
    outbox_rx: Mutex<Option<mpsc::UnboundedReceiver<Note>>>,
    /// Acks received and not yet committed: a queue that reads its node's rows leaves
    /// these out, so that a message acked is not sent again meanwhile.
    unflushed: Mutex<std::collections::HashSet<(Node, i64)>>,
    /// Frames of recent messages, for the deliveries that would read them back.
    pub frames: crate::frames::Frames,
    /// Stored hashes of the node secrets of recent logins and registrations.
    pub node_hashes: crate::node_hashes::NodeHashes,
}

/// Bytes of recent message frames kept for the queues ([`Hub::frames`]).
pub const FRAME_CACHE: usize = 8 << 20;

/// An `ohi` note for other instances: the uid whose nodes get it, and the frame.
type Note = (String, Vec<u8>);

/// Most acks committed in one transaction: 256 statements of 16 acks (the store's
/// `ROW_CHUNK`). One transaction at a time must keep up with every delivery of the
/// instance even when each waits seconds for a pooled connection: at 1000 clients on
/// PostgreSQL, batches of 512 fell 200,000 acks behind (each a message sent again).
const ACK_BATCH: usize = 4096;
/// Message ids taken from the database at a time (about a millisecond of the
/// nanosecond clock).
const ID_BLOCK: i64 = 1 << 20;
/// Work rows taken at a time.
const WAKE_BATCH: i64 = 1000;
/// Work rows older than this many seconds are for an instance that died.
const WAKE_KEEP: i64 = 60;

/// Current Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Hub {
    /// A hub whose ids continue after `last_id` (the highest stored) or from the clock
    /// in nanoseconds, whichever is later (spec/tmtp.md §4.4), in blocks shared with the
    /// other instances on the database ([`Hub::next_id`]).
    ///
    /// Starts the task that commits recipient acks; it must be called within a Tokio
    /// runtime, and the task ends (after its last commit) once [`Hub::tasks`] is closed
    /// and the last queue has ended.
    pub fn new(store: Store, settings: Settings, stats: Stats, oidc: crate::oidc::Verifier, last_id: u64) -> Arc<Hub> {
        let last = i64::try_from(last_id).unwrap_or(i64::MAX);
        let (acks, rx) = mpsc::unbounded_channel();
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Hub {
            store,
            settings,
            stats,
            oidc,
            ids: Mutex::new((last, last)),
            refill: tokio::sync::Mutex::new(()),
            tasks: TaskTracker::new(),
            links: Mutex::default(),
            presence: Mutex::default(),
            acks,
            others: AtomicBool::new(false),
            outbox,
            outbox_rx: Mutex::new(Some(outbox_rx)),
            unflushed: Mutex::default(),
            frames: crate::frames::Frames::new(FRAME_CACHE),
            node_hashes: crate::node_hashes::NodeHashes::default(),
        });
        // The writer holds the hub weakly: it ends when every queue (each holding the hub)
        // has ended and the channel is empty.
        tokio::spawn(write_acks(Arc::downgrade(&hub), rx));
        hub
    }

    /// Node `node` acknowledged message `id`: recorded at once in memory (so the queue
    /// goes on to its next message), committed with the other acks that arrive
    /// meanwhile in one transaction (group commit). An ack lost in a crash before its
    /// commit only means the message is sent again; clients drop a repeated id.
    pub fn ack(&self, node: &Node, id: i64) {
        self.unflushed.lock().unwrap_or_else(|p| p.into_inner()).insert((node.clone(), id));
        let _ = self.acks.send((node.clone(), id));
    }

    /// Waits (at most `limit`) until every ack received is committed: at shutdown, after
    /// the last queue has ended.
    pub async fn flush_acks(&self, limit: Duration) {
        let until = tokio::time::Instant::now() + limit;
        while !self.unflushed.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            if tokio::time::Instant::now() >= until {
                tracing::warn!("acks not recorded at shutdown; their messages will be sent again");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether node `node` acked message `id` in an ack not yet committed.
    pub fn ack_pending(&self, node: &Node, id: i64) -> bool {
        let unflushed = self.unflushed.lock().unwrap_or_else(|p| p.into_inner());
        !unflushed.is_empty() && unflushed.contains(&(node.clone(), id))
    }

    /// The identity of a valid token as stored on the account (spec §12: subject,
    /// issuer, audience, issue time).
    pub fn oidc_identity(&self, token: Option<&str>) -> Option<String> {
        let c = self.oidc.verify(token?).ok()?;
        let issued = c
            .iat
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
        Some(
            serde_json::json!({"Subject": c.sub, "Issuer": c.iss, "Audience": c.aud, "IssuedAt": issued.unwrap_or_default()})
                .to_string(),
        )
    }

    /// A fresh message id: strictly increasing here, unique across every instance on
    /// the database whatever their clocks, at or above the clock in nanoseconds when a
    /// block is taken (spec/tmtp.md §4.4).
    ///
    /// # Errors
    /// [`common::StoreError`]: a new block could not be taken.
    pub async fn next_id(&self) -> Result<i64, common::StoreError> {
        if let Some(id) = self.hand_id() {
            return Ok(id);
        }
        let _refill = self.refill.lock().await;
        if let Some(id) = self.hand_id() {
            return Ok(id);
        }
        let last = self.ids.lock().unwrap_or_else(|p| p.into_inner()).0;
        let clock =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
        let end = self.store.tmtp_take_ids(clock.max(last), ID_BLOCK).await?;
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        // The block starts at or above `last` and holds ID_BLOCK ids: the next is in it.
        let id = (end - ID_BLOCK).max(ids.0) + 1;
        *ids = (id, end);
        Ok(id)
    }

    fn hand_id(&self) -> Option<i64> {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        (ids.0 + 1 < ids.1).then(|| {
            ids.0 += 1;
            ids.0
        })
    }

    /// Registers `link` as node `key`'s connection, here and in the database for every
    /// instance; false if the node has one (here or on another instance).
    ///
    /// # Errors
    /// [`common::StoreError`]: the node is not attached then.
    pub async fn attach(&self, key: &Node, link: &Arc<Link>) -> Result<bool, common::StoreError> {
        {
            let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
            if links.get(key).is_some_and(|l| !l.closed.is_cancelled()) {
                return Ok(false);
            }
            links.insert(key.clone(), link.clone());
        }
        let lease = i64::try_from(self.settings.link_lease.as_secs()).unwrap_or(30);
        let taken = self.store.tmtp_link_take(key, &self.settings.instance, link.token, lease).await;
        if !matches!(taken, Ok(true)) {
            self.forget(key, link);
        }
        if matches!(taken, Ok(false)) {
            // Held by another instance: there is one, whatever the last look said.
            self.others.store(true, Ordering::Release);
        }
        taken
    }

    /// Forgets node `key`'s connection if it is still `link`, here and (in a task of
    /// its own) in the database.
    pub fn detach(self: &Arc<Self>, key: &Node, link: &Arc<Link>) {
        if self.forget(key, link) {
            let (hub, key, token) = (self.clone(), key.clone(), link.token);
            self.tasks.spawn(async move {
                if let Err(e) = hub.store.tmtp_link_release(&key, &hub.settings.instance, token).await {
                    tracing::warn!(cause = %e, "releasing a link failed; its lease will run out");
                }
            });
        }
    }

    fn forget(&self, key: &Node, link: &Arc<Link>) -> bool {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if links.get(key).is_some_and(|l| Arc::ptr_eq(l, link)) {
            links.remove(key);
            return true;
        }
        false
    }

    /// This instance's name when some of `nodes` is not connected here (their queue
    /// rows then come with work for the instance that has them).
    pub fn remote<'a, 'n>(&'a self, nodes: impl IntoIterator<Item = &'n Node>) -> Option<&'a str> {
        if !self.others.load(Ordering::Acquire) {
            return None;
        }
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        nodes.into_iter().any(|n| !links.contains_key(n)).then_some(self.settings.instance.as_str())
    }

    /// Connections of every node of `uid`.
    pub fn links_of(&self, uid: &str) -> Vec<Arc<Link>> {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.iter().filter(|(n, _)| n.uid == uid).map(|(_, l)| l.clone()).collect()
    }

    /// Tells the queues of `nodes` that are online here to read the database (messages
    /// another instance stored for them).
    pub fn wake(&self, nodes: &[Node]) {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        for n in nodes {
            if let Some(l) = links.get(n) {
                l.mark_stale();
            }
        }
    }

    /// Hands `message`, just committed for `nodes`, to those of them online here.
    pub fn hand(&self, nodes: &[Node], message: &Arc<Outgoing>) {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        for n in nodes {
            if let Some(l) = links.get(n) {
                l.hand(message.clone());
            }
        }
    }

    /// Sends `frame` to every connected node of `uid`, here and on the other instances,
    /// best effort (spec §8.3: an `ohi` that cannot be written within 200 ms is dropped).
    pub fn notify_uid(&self, uid: &str, frame: Vec<u8>) {
        if self.others.load(Ordering::Acquire) {
            let _ = self.outbox.send((uid.to_owned(), frame.clone()));
        }
        self.notify_here(uid, frame);
    }

    /// Sends `frame` to every node of `uid` connected here, best effort.
    fn notify_here(&self, uid: &str, frame: Vec<u8>) {
        for link in self.links_of(uid) {
            let frame = frame.clone();
            self.tasks.spawn(async move {
                if let Ok(mut w) = tokio::time::timeout(Duration::from_millis(200), link.writer.lock()).await {
                    link.write_locked(&mut w, &frame).await;
                }
            });
        }
    }

    /// Presence of `user` as seen by `target`: turns it on or off; true if it changed
    /// (spec §9).
    pub fn presence_set(&self, user: &str, target: &str, on: bool) -> bool {
        let mut p = self.presence.lock().unwrap_or_else(|p| p.into_inner());
        let entry = p.entry(user.to_owned()).or_default();
        let was = entry.on.get(target).copied().unwrap_or(false);
        entry.on.insert(target.to_owned(), on);
        was != on
    }

    /// One more connection of `user` issued OhiEdit.
    pub fn presence_join(&self, user: &str) {
        self.presence.lock().unwrap_or_else(|p| p.into_inner()).entry(user.to_owned()).or_default().refs += 1;
    }

    /// A connection of `user` that issued OhiEdit ended; at the last one the map is
    /// dropped and the uids it had on are returned (to be told "offline").
    pub fn presence_leave(&self, user: &str) -> Vec<String> {
        let mut p = self.presence.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = p.get_mut(user) else { return Vec::new() };
        entry.refs = entry.refs.saturating_sub(1);
        if entry.refs > 0 {
            return Vec::new();
        }
        let gone = p.remove(user).map(|e| e.on.into_iter().filter(|(_, on)| *on).map(|(u, _)| u).collect());
        gone.unwrap_or_default()
    }

    /// Users whose presence map has `target` on (for `info.ohi` at its login).
    pub fn presence_for(&self, target: &str) -> Vec<String> {
        let p = self.presence.lock().unwrap_or_else(|p| p.into_inner());
        let mut users: Vec<String> =
            p.iter().filter(|(_, e)| e.refs > 0 && e.on.get(target) == Some(&true)).map(|(u, _)| u.clone()).collect();
        users.sort();
        users
    }
}

/// Commits recipient acks in batches: whatever arrived while the previous batch was
/// being committed goes in the next transaction. A failed commit is tried again after a
/// pause; the acks stay pending (and their messages unsent) meanwhile.
async fn write_acks(hub: std::sync::Weak<Hub>, mut rx: mpsc::UnboundedReceiver<(Node, i64)>) {
    let mut batch: Vec<(Node, i64)> = Vec::with_capacity(ACK_BATCH);
    loop {
        if batch.is_empty() {
            // Ends when no sender is left: the hub itself holds one, so only after it.
            let Some(first) = rx.recv().await else { return };
            batch.push(first);
        }
        while batch.len() < ACK_BATCH {
            match rx.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        let Some(hub) = hub.upgrade() else { return };
        match hub.store.tmtp_acks(&batch).await {
            Ok(_) => {
                let mut unflushed = hub.unflushed.lock().unwrap_or_else(|p| p.into_inner());
                for a in batch.drain(..) {
                    unflushed.remove(&a);
                }
            }
            Err(e) => {
                tracing::error!(cause = %e, acks = batch.len(), "recording acks failed; retrying");
                drop(hub);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// This instance's part in sharing the database with others (issue 19), until
/// `shutdown`: renews its nodes' link leases every third of the lease; takes the work
/// other instances left for it when PostgreSQL notifies it, or every `wake_poll` (5 s
/// with notifications); at the end gives up its leases so that its nodes may log in on
/// another instance at once.
pub async fn share(hub: Arc<Hub>, shutdown: CancellationToken) {
    let lease = i64::try_from(hub.settings.link_lease.as_secs()).unwrap_or(30);
    let mut listener = match hub.store.tmtp_listener().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(cause = %e, "no LISTEN connection; polling for other instances' work");
            None
        }
    };
    let poll = if listener.is_some() { Duration::from_secs(5) } else { hub.settings.wake_poll };
    let mut renew = tokio::time::interval(hub.settings.link_lease / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut look = tokio::time::interval(poll);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut census = tokio::time::interval(Duration::from_secs(1));
    census.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let Some(mut outbox) = hub.outbox_rx.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
    loop {
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = renew.tick() => {
                if let Err(e) = hub.store.tmtp_link_renew(&hub.settings.instance, lease, WAKE_KEEP).await {
                    tracing::error!(cause = %e, "renewing link leases failed");
                }
                continue;
            }
            _ = census.tick() => {
                match hub.store.tmtp_link_others(&hub.settings.instance).await {
                    Ok(others) => hub.others.store(others, Ordering::Release),
                    // Unknown: look for recipients elsewhere rather than miss one.
                    Err(_) => hub.others.store(true, Ordering::Release),
                }
                continue;
            }
            Some((uid, frame)) = outbox.recv() => {
                if let Err(e) = hub.store.tmtp_wake_uid(&uid, &hub.settings.instance, &frame).await {
                    tracing::warn!(cause = %e, "an ohi note for other instances was dropped");
                }
                continue;
            }
            got = notified => {
                if let Err(e) = got {
                    tracing::warn!(cause = %e, "LISTEN connection failed; polling until it is back");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            _ = look.tick() => {}
        }
        take_work(&hub).await;
    }
    if let Err(e) = hub.store.tmtp_link_renew(&hub.settings.instance, -1, WAKE_KEEP).await {
        tracing::warn!(cause = %e, "giving up link leases failed; they will run out");
    }
}

/// Takes the work other instances left for this one and does it.
async fn take_work(hub: &Hub) {
    loop {
        let work = match hub.store.tmtp_wakes(&hub.settings.instance, WAKE_BATCH).await {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(cause = %e, "reading other instances' work failed");
                return;
            }
        };
        let full = work.len() as i64 >= WAKE_BATCH;
        for w in work {
            match w.frame {
                None => hub.wake(std::slice::from_ref(&w.node)),
                Some(frame) => hub.notify_here(&w.node.uid, frame),
            }
        }
        if !full {
            return;
        }
    }
}
