//! The TMTP operations of the [`Store`] (mmtmtpd, spec/tmtp.md §8, §10): accounts,
//! nodes, aliases, groups and the per-node queues, on all three backends. The SQL and
//! the transactions are in `sql` and `ops`; the durability contract is in `ops`.

use super::model::{
    AddAlias, AddNode, Member, Node, Queued, ReadyMessage, TmtpMessage, TmtpOp, UploadPart, Wake, WholeMessage,
};
use super::together::{Held, Job, Turn, pg_together, sqlite_turn, sqlite_waiting};
use super::{Store, dispatch, mysql, postgres, retrying, sqlite, sqlite_in_memory};
use crate::error::StoreError;

/// A TMTP write waiting to be done together with others (group commit), owned: it
/// outlives its caller when the caller goes away. One variant per kind of public write, as
/// [`TmtpOp`] borrows it.
pub(crate) enum TmtpWrite {
    /// [`Store::tmtp_store_messages`].
    Posts { messages: Vec<OwnedMessage>, remote: Option<String> },
    /// [`Store::tmtp_upload`].
    Upload { id: i64, begin: bool, chunk: Option<(i64, Vec<u8>)>, ready: Option<OwnedReady> },
    /// [`Store::tmtp_acks`].
    Acks(Vec<(Node, i64)>),
}

impl TmtpWrite {
    /// Its ops, appended to `ops`.
    fn ops<'a>(&'a self, ops: &mut Vec<TmtpOp<'a>>) {
        match self {
            TmtpWrite::Posts { messages, remote } => ops.extend(messages.iter().map(|m| {
                let whole = WholeMessage { id: m.id, header: &m.header, data: &m.data, prio: &m.prio, nodes: &m.nodes };
                TmtpOp::Whole(whole, remote.as_deref())
            })),
            TmtpWrite::Upload { id, begin, chunk, ready } => {
                let id = *id;
                if *begin {
                    ops.push(TmtpOp::Begin(id));
                }
                if let Some((seq, data)) = chunk {
                    ops.push(TmtpOp::Chunk { id, seq: *seq, data });
                }
                if let Some(OwnedReady { header, size, prio, nodes, remote }) = ready {
                    ops.push(TmtpOp::Ready { id, header, size: *size, prio, nodes, remote: remote.as_deref() });
                }
            }
            TmtpWrite::Acks(acks) => ops.push(TmtpOp::Acks(acks)),
        }
    }

    /// Bytes it writes, for a batch's bound.
    fn bytes(&self) -> usize {
        match self {
            TmtpWrite::Posts { messages, .. } => messages.iter().map(|m| m.header.len() + m.data.len()).sum(),
            TmtpWrite::Upload { chunk, ready, .. } => {
                16 + chunk.as_ref().map_or(0, |(_, data)| data.len())
                    + ready.as_ref().map_or(0, |r| r.header.len() + r.nodes.len() * 32)
            }
            TmtpWrite::Acks(acks) => acks.iter().map(|(n, _)| n.uid.len() + 16).sum(),
        }
    }
}

/// A [`ReadyMessage`] copied for a group commit.
pub(crate) struct OwnedReady {
    header: Vec<u8>,
    size: i64,
    prio: String,
    nodes: Vec<Node>,
    remote: Option<String>,
}

/// The answer to a [`TmtpWrite`]: how many queue rows its acks removed (0 for posts).
pub(crate) type TmtpAnswer = Result<u64, StoreError>;

/// A [`WholeMessage`] copied for a group commit, which outlives the call that made it
/// when the caller goes away.
pub(crate) struct OwnedMessage {
    id: i64,
    header: Vec<u8>,
    data: Vec<u8>,
    prio: String,
    nodes: Vec<Node>,
}

/// The TMTP operations (spec/tmtp.md §8, §10). Every method fails only with
/// [`StoreError::Db`]; protocol refusals are in the `Ok` value.
impl Store {
    /// Creates account `uid` with node 1 of stored hash `hash`; `auth` is the OpenID
    /// Connect identity as JSON, if any.
    ///
    /// # Errors
    /// [`StoreError::Db`], also when `uid` or `hash` exists already.
    pub async fn tmtp_register(&self, uid: &str, hash: &str, auth: Option<&str>) -> Result<(), StoreError> {
        let now = super::unix_now();
        retrying("register", || async { dispatch!(self, register(uid, hash, now, auth)) }).await
    }

    /// The live node whose stored hash is `hash`.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_node(&self, hash: &str) -> Result<Option<Node>, StoreError> {
        dispatch!(self, node_by_hash(hash))
    }

    /// Whether account `uid` exists.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_user_exists(&self, uid: &str) -> Result<bool, StoreError> {
        dispatch!(self, user_exists(uid))
    }

    /// Which of `uids` have an account, [`ID_CHUNK`](super::sql::ID_CHUNK) per query
    /// (an `ohi` list of a hundred members is four queries, not a hundred). Exact
    /// comparison, as [`Store::tmtp_user_exists`].
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_users_among(&self, uids: &[&str]) -> Result<std::collections::HashSet<String>, StoreError> {
        dispatch!(self, users_among(uids))
    }

    /// The live node numbers, ascending, of each account among `uids`, by uid (an
    /// account without live nodes: an empty list; a uid without an account: absent), in
    /// one query per [`ID_CHUNK`](super::sql::ID_CHUNK) uids. Exact comparison, as
    /// [`Store::tmtp_user_exists`]. A post's recipients named by uid, and the sender's
    /// own nodes, in one round trip (spec/tmtp.md §7).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_users_nodes(
        &self,
        uids: &[&str],
    ) -> Result<std::collections::HashMap<String, Vec<i64>>, StoreError> {
        dispatch!(self, users_nodes(uids))
    }

    /// Adds a node of stored hash `hash` to `uid` (at most `max` live nodes) whose queue
    /// starts as a copy of node `from_num`'s (spec/tmtp.md §5.3).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_add_node(&self, uid: &str, hash: &str, from_num: i64, max: i64) -> Result<AddNode, StoreError> {
        retrying("add node", || async { dispatch!(self, add_node(uid, hash, from_num, max)) }).await
    }

    /// The uid owning `alias`.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_alias_owner(&self, alias: &str) -> Result<Option<String>, StoreError> {
        dispatch!(self, alias_owner(alias))
    }

    /// Gives `alias` to `uid` (again, when it is already `uid`'s).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_add_alias(&self, uid: &str, alias: &str) -> Result<AddAlias, StoreError> {
        retrying("add alias", || async { dispatch!(self, add_alias(uid, alias)) }).await
    }

    /// Whether group `gid` exists (has member rows).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_group_exists(&self, gid: &str) -> Result<bool, StoreError> {
        dispatch!(self, group_exists(gid))
    }

    /// The members of `gid`, by uid.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_members(&self, gid: &str) -> Result<Vec<Member>, StoreError> {
        dispatch!(self, members(gid))
    }

    /// The live nodes of the joined members of `gid`, in one query (a group post reaches
    /// them all).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_group_nodes(&self, gid: &str) -> Result<Vec<Node>, StoreError> {
        dispatch!(self, group_nodes(gid))
    }

    /// Writes (replaces) these members of `gid` in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_set_members(&self, gid: &str, members: &[Member]) -> Result<(), StoreError> {
        retrying("members", || async { dispatch!(self, set_members(gid, members)) }).await
    }

    /// Writes `part` of streamed message `id` in one commit: the message row when
    /// `part.begin` (its first write), then a data chunk, then, with `part.ready`, makes it
    /// deliverable as [`Store::tmtp_commit_message`] does. An upload of `n` chunks is
    /// thus `n` commits: the first chunk carries the begin and the last the ready (not
    /// `n + 2`).
    ///
    /// A `COMMIT` without an answer is resolved, when `part.ready` is given, as in
    /// [`Store::tmtp_commit_message`].
    ///
    /// # Errors
    /// [`StoreError::Db`]: nothing of `part` was written. [`StoreError::CommitUnknown`]
    /// as in [`Store::tmtp_commit_message`].
    pub async fn tmtp_upload(&self, id: i64, part: UploadPart<'_>) -> Result<(), StoreError> {
        let UploadPart { begin, chunk, ready } = part;
        let work = TmtpWrite::Upload {
            id,
            begin,
            chunk,
            ready: ready.map(|r| OwnedReady {
                header: r.header.to_vec(),
                size: r.size,
                prio: r.prio.to_owned(),
                nodes: r.nodes.to_vec(),
                remote: r.remote.map(str::to_owned),
            }),
        };
        if ready.is_none() {
            return self.write_tmtp("upload", work).await.map(drop);
        }
        let done = self.write_tmtp("queueing", work).await.map(drop);
        self.resolve_queued(id, done).await
    }

    /// Starts message `id` ([`Store::tmtp_upload`] with only `begin`): its data chunks may
    /// follow ([`Store::tmtp_put_chunk`]); it is not deliverable before
    /// [`Store::tmtp_commit_message`].
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_begin_message(&self, id: i64) -> Result<(), StoreError> {
        self.tmtp_upload(id, UploadPart { begin: true, ..UploadPart::default() }).await
    }

    /// Stores data chunk `seq` (from 0) of message `id` ([`Store::tmtp_upload`] with only
    /// the chunk).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_put_chunk(&self, id: i64, seq: i64, data: &[u8]) -> Result<(), StoreError> {
        self.tmtp_upload(id, UploadPart { chunk: Some((seq, data.to_vec())), ..UploadPart::default() }).await
    }

    /// Makes message `id` deliverable with frame header `header` (length digits and
    /// JSON) and `size` data bytes, queued with `prio` to `nodes`, all in one
    /// transaction. With no nodes the message is dropped.
    ///
    /// A `COMMIT` without an answer is resolved by asking whether the message is ready
    /// once the database answers again (see [`Store::deliver`]).
    ///
    /// `remote` as in [`Store::tmtp_store_messages`].
    ///
    /// # Errors
    /// [`StoreError::Db`]; nothing was queued then. [`StoreError::CommitUnknown`] if the
    /// database did not answer again within 30 s.
    pub async fn tmtp_commit_message(
        &self,
        id: i64,
        header: &[u8],
        size: i64,
        prio: &str,
        nodes: &[Node],
        remote: Option<&str>,
    ) -> Result<(), StoreError> {
        let ready = ReadyMessage { header, size, prio, nodes, remote };
        self.tmtp_upload(id, UploadPart { ready: Some(ready), ..UploadPart::default() }).await
    }

    /// Stores messages whose data came whole (each at most one 64 KiB chunk), each with
    /// its chunk and its queue rows, all in one transaction: deliverable (and ackable to
    /// their sender) after a single commit. A message with no nodes is not stored.
    ///
    /// On a SQLite file and on PostgreSQL, this and every other TMTP write of messages
    /// and acks ([`Store::tmtp_upload`], [`Store::tmtp_acks`]) that arrive while others are
    /// being written (on SQLite: while another write holds the database) are written
    /// together, up to 64 calls and 4 MiB of data in one transaction and one sync (group
    /// commit, as [`Store::deliver`]); each returns only once its own work is committed.
    ///
    /// A `COMMIT` without an answer is resolved as in [`Store::tmtp_commit_message`], by
    /// the first stored message.
    ///
    /// # Errors
    /// [`StoreError::Db`]; nothing was stored then. [`StoreError::CommitUnknown`] if the
    /// database did not answer again within 30 s.
    ///
    /// `remote`: this instance's name when some recipient is not connected here; then
    /// recipients connected to other instances get work rows in the same transaction
    /// (see [`Store::tmtp_wakes`]).
    pub async fn tmtp_store_messages(
        &self,
        messages: &[WholeMessage<'_>],
        remote: Option<&str>,
    ) -> Result<(), StoreError> {
        let Some(first) = messages.iter().find(|m| !m.nodes.is_empty()) else { return Ok(()) };
        let messages: Vec<OwnedMessage> = messages
            .iter()
            .filter(|m| !m.nodes.is_empty())
            .map(|m| OwnedMessage {
                id: m.id,
                header: m.header.to_vec(),
                data: m.data.to_vec(),
                prio: m.prio.to_owned(),
                nodes: m.nodes.to_vec(),
            })
            .collect();
        let work = TmtpWrite::Posts { messages, remote: remote.map(str::to_owned) };
        let done = self.write_tmtp("queueing", work).await.map(drop);
        self.resolve_queued(first.id, done).await
    }

    /// Does `work` (`what` it is, for the log of retries): through a group commit on a
    /// SQLite file and on PostgreSQL ([`Store::write_together`]), elsewhere in a
    /// transaction of its own.
    async fn write_tmtp(&self, what: &'static str, work: TmtpWrite) -> TmtpAnswer {
        let together = match self {
            Store::Sqlite(p) => !sqlite_in_memory(p),
            Store::Postgres(_) => true,
            Store::MySql(_) => false,
        };
        if together {
            return self.write_together(work).await;
        }
        let now = super::unix_now();
        let mut ops = Vec::new();
        work.ops(&mut ops);
        let done = retrying(what, || async { dispatch!(self, write_tmtp(&ops, now, false)) }).await?;
        Ok(done.into_iter().sum())
    }

    /// `work` done through a group commit: TMTP writes that wait for the database's turn
    /// (SQLite: the writer turn; PostgreSQL: one of its batch turns) are done together,
    /// in one transaction and one sync, by whichever of them gets a turn next; each
    /// returns once that transaction is committed, with its own answer. When the
    /// database refuses one of them, each is done again alone, so that only that one
    /// fails.
    async fn write_together(&self, work: TmtpWrite) -> TmtpAnswer {
        self.gate().await?;
        let (waiting, turn) = match self {
            Store::Sqlite(p) => (sqlite_waiting(p).tmtp, Turn::Writer(sqlite_turn(p))),
            Store::Postgres(p) => {
                let (waiting, turns) = pg_together(p);
                (waiting.tmtp, Turn::Batches(turns))
            }
            Store::MySql(_) => return Err(StoreError::UnsupportedUrl),
        };
        let run = |held, batch| {
            let store = self.clone();
            async move { store.write_batch(held, batch).await }
        };
        let bytes = work.bytes();
        let answer = super::together::together(&waiting, &turn, super::TOGETHER, work, bytes, run).await;
        answer.unwrap_or_else(|| Err(StoreError::CommitUnknown(sqlx::Error::WorkerCrashed)))
    }

    /// Runs a batch of [`Store::write_together`] in one transaction under its turn
    /// `held`, then answers each of them.
    async fn write_batch(&self, held: Held, batch: Vec<Job<TmtpWrite, TmtpAnswer>>) {
        let now = super::unix_now();
        let (mut work, mut answers) = (Vec::with_capacity(batch.len()), Vec::with_capacity(batch.len()));
        for j in batch {
            work.push(j.work);
            answers.push(j.answer);
        }
        let done = self.write_ops(&work, now).await;
        if work.len() > 1 && matches!(&done, Err(StoreError::Db(sqlx::Error::Database(_)))) {
            // Refused: find which, by doing each alone (once; still under the turn).
            for (w, answer) in work.iter().zip(answers) {
                let _ = answer.send(self.write_ops(std::slice::from_ref(w), now).await.map(|n| n[0]));
            }
            return;
        }
        drop(held);
        match done {
            Ok(each) => {
                for (n, answer) in each.into_iter().zip(answers) {
                    let _ = answer.send(Ok(n));
                }
            }
            Err(e) => super::together::answer_all_failed(answers, e),
        }
    }

    /// Does `work` in one transaction (retried as [`retrying`] retries), under a turn the
    /// caller holds; the queue rows each one's acks removed.
    async fn write_ops(&self, work: &[TmtpWrite], now: i64) -> Result<Vec<u64>, StoreError> {
        let mut ops = Vec::new();
        let mut ends = Vec::with_capacity(work.len());
        for w in work {
            w.ops(&mut ops);
            ends.push(ops.len());
        }
        let done = retrying("queueing", || async {
            let r = match self {
                Store::Sqlite(p) => sqlite::write_tmtp(p, &ops, now, true).await,
                Store::Postgres(p) => postgres::write_tmtp(p, &ops, now, true).await,
                Store::MySql(p) => mysql::write_tmtp(p, &ops, now, true).await,
            };
            self.observe(&r);
            r
        })
        .await?;
        let mut start = 0;
        Ok(ends
            .into_iter()
            .map(|end| {
                let n = done[start..end].iter().sum();
                start = end;
                n
            })
            .collect())
    }

    /// A queueing transaction's result, with a `COMMIT` that got no answer resolved by
    /// asking whether message `id` is ready once the database answers again.
    async fn resolve_queued(&self, id: i64, done: Result<(), StoreError>) -> Result<(), StoreError> {
        match done {
            Err(StoreError::CommitUnknown(e)) => {
                match super::resolve("queueing", || async { Ok(dispatch!(self, message(id))?.is_some()) }).await {
                    Some(true) => Ok(()),
                    Some(false) => Err(StoreError::Db(e)),
                    None => Err(StoreError::CommitUnknown(e)),
                }
            }
            other => other,
        }
    }

    /// Drops message `id` (an upload that failed, or a resolution error), unless queued.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_discard(&self, id: i64) -> Result<(), StoreError> {
        retrying("discard", || async { dispatch!(self, discard(id)) }).await
    }

    /// The pending messages of node (`uid`, `num`) in delivery order.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_queue(&self, uid: &str, num: i64) -> Result<Vec<Queued>, StoreError> {
        dispatch!(self, queue(uid, num))
    }

    /// The first `limit` pending messages of node (`uid`, `num`) in delivery order, or
    /// the first after `after` (a node's queue is read in pages, spec/tmtp.md §8.2).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_queue_page(
        &self,
        uid: &str,
        num: i64,
        after: Option<&Queued>,
        limit: i64,
    ) -> Result<Vec<Queued>, StoreError> {
        dispatch!(self, queue_page(uid, num, after, limit))
    }

    /// Deliverable message `id`: its frame header, data size and first data chunk, in
    /// one query.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_message(&self, id: i64) -> Result<Option<TmtpMessage>, StoreError> {
        dispatch!(self, message_start(id))
    }

    /// Up to `limit` data chunks of message `id` (64 KiB each), from chunk `from` (0 is
    /// the first) on, in order, in one query; the run ends early at a missing chunk
    /// (none at all when chunk `from` is missing).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_chunks(&self, id: i64, from: i64, limit: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        let rows = dispatch!(self, chunks(id, from, limit))?;
        Ok(rows.into_iter().zip(from..).take_while(|((seq, _), want)| seq == want).map(|((_, data), _)| data).collect())
    }

    /// Node (`uid`, `num`) acknowledged message `id`: its queue row goes, and the message
    /// with its last one. False when it was not queued there.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_ack(&self, uid: &str, num: i64, id: i64) -> Result<bool, StoreError> {
        Ok(self.tmtp_acks(&[(Node { uid: uid.to_owned(), num }, id)]).await? > 0)
    }

    /// Recipient acks, applied together in one transaction (group commit): each
    /// (node, message id) as in [`Store::tmtp_ack`]. Returns how many queue rows went.
    /// On a SQLite file and on PostgreSQL they share that transaction with the posts
    /// and other acks that wait for the database meanwhile
    /// ([`Store::tmtp_store_messages`]).
    ///
    /// # Errors
    /// [`StoreError::Db`]; none of them was applied then.
    pub async fn tmtp_acks(&self, acks: &[(Node, i64)]) -> Result<u64, StoreError> {
        self.write_tmtp("ack", TmtpWrite::Acks(acks.to_vec())).await
    }

    /// At start: removes messages whose upload never finished; returns how many.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_cleanup(&self) -> Result<u64, StoreError> {
        retrying("cleanup", || async { dispatch!(self, cleanup()) }).await
    }

    /// Takes node `node`'s link for link `token` of instance `instance`, as a lease of
    /// `lease` seconds; false if another instance holds it (mnm's "node already
    /// connected"). A lease that ran out, or a row of this instance left from an earlier
    /// link, is taken over.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_link_take(
        &self,
        node: &Node,
        instance: &str,
        token: i64,
        lease: i64,
    ) -> Result<bool, StoreError> {
        let now = super::unix_now();
        retrying("link", || async { dispatch!(self, link_take(node, instance, token, now, now + lease)) }).await
    }

    /// Releases node `node`'s link if link `token` of `instance` still holds it.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_link_release(&self, node: &Node, instance: &str, token: i64) -> Result<(), StoreError> {
        retrying("link", || async { dispatch!(self, link_release(node, instance, token)) }).await
    }

    /// Renews every link lease of `instance` for `lease` seconds and removes work rows
    /// older than `keep_work` seconds; returns how many leases were renewed.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_link_renew(&self, instance: &str, lease: i64, keep_work: i64) -> Result<u64, StoreError> {
        let now = super::unix_now();
        retrying("link", || async { dispatch!(self, link_renew(instance, now + lease, now - keep_work)) }).await
    }

    /// Leaves `frame` (an `ohi` note) for every other instance where a node of `uid` is
    /// connected; whether there was one.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_wake_uid(&self, uid: &str, instance: &str, frame: &[u8]) -> Result<bool, StoreError> {
        let now = super::unix_now();
        retrying("wake", || async { dispatch!(self, wake_uid(uid, instance, frame, now)) }).await
    }

    /// Whether another instance than `instance` has a node connected (a live lease).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_link_others(&self, instance: &str) -> Result<bool, StoreError> {
        let now = super::unix_now();
        dispatch!(self, link_others(instance, now))
    }

    /// Takes (reads and deletes) up to `limit` rows of work left for `instance` by other
    /// instances, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_wakes(&self, instance: &str, limit: i64) -> Result<Vec<Wake>, StoreError> {
        retrying("wake", || async { dispatch!(self, wakes(instance, limit)) }).await
    }

    /// Takes a block of `size` message ids shared by every instance: the block ends at
    /// the returned id (exclusive) and starts `size` before it, at or above `floor` (this
    /// instance's clock in nanoseconds, or its highest id), spec/tmtp.md §4.4.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_take_ids(&self, floor: i64, size: i64) -> Result<i64, StoreError> {
        retrying("ids", || async { dispatch!(self, take_ids(floor, size)) }).await
    }

    /// On PostgreSQL, a listener woken when another instance leaves work for this one
    /// (`NOTIFY mmtmtpd_wake` at the commit that leaves it); None on the other backends,
    /// which poll [`Store::tmtp_wakes`].
    ///
    /// # Errors
    /// [`StoreError::Db`]: the listening connection could not be made.
    pub async fn tmtp_listener(&self) -> Result<Option<WakeListener>, StoreError> {
        let Store::Postgres(pool) = self else { return Ok(None) };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen("mmtmtpd_wake").await?;
        Ok(Some(WakeListener(listener)))
    }

    /// The highest message id stored (0 when none): ids must keep growing across
    /// restarts (spec/tmtp.md §4.4).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_max_message_id(&self) -> Result<i64, StoreError> {
        dispatch!(self, max_message_id())
    }
}

/// A PostgreSQL connection listening for `mmtmtpd_wake` notifications
/// ([`Store::tmtp_listener`]).
pub struct WakeListener(sqlx::postgres::PgListener);

impl WakeListener {
    /// Waits for the next notification. sqlx reconnects a lost connection by itself
    /// (notifications sent meanwhile are lost: the poll catches their work).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn wait(&mut self) -> Result<(), StoreError> {
        self.0.recv().await?;
        Ok(())
    }
}
