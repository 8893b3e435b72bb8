//! The TMTP operations of the [`Store`] (mmtmtpd, spec/tmtp.md §8, §10): accounts,
//! nodes, aliases, groups and the per-node queues, on all three backends. The SQL and
//! the transactions are in `sql` and `ops`; the durability contract is in `ops`.

use super::model::{AddAlias, AddNode, Member, Node, Queued, TmtpMessage, Wake, WholeMessage};
use super::{Store, dispatch, mysql, postgres, retrying, sqlite};
use crate::error::StoreError;

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

    /// The live node numbers of `uid`, ascending.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_nodes(&self, uid: &str) -> Result<Vec<i64>, StoreError> {
        dispatch!(self, nodes(uid))
    }

    /// The live node numbers of account `uid`, ascending; None when there is no such
    /// account (one query for both).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_user_nodes(&self, uid: &str) -> Result<Option<Vec<i64>>, StoreError> {
        dispatch!(self, user_nodes(uid))
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

    /// Starts message `id`: its data chunks may follow ([`Store::tmtp_put_chunk`]); it is
    /// not deliverable before [`Store::tmtp_commit_message`].
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_begin_message(&self, id: i64) -> Result<(), StoreError> {
        let now = super::unix_now();
        retrying("upload", || async { dispatch!(self, begin_message(id, now)) }).await
    }

    /// Stores data chunk `seq` (from 0) of message `id`.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_put_chunk(&self, id: i64, seq: i64, data: &[u8]) -> Result<(), StoreError> {
        retrying("upload", || async { dispatch!(self, put_chunk(id, seq, data)) }).await
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
        let remote = remote.map(|me| (me, super::unix_now()));
        let done =
            retrying("queueing", || async { dispatch!(self, commit_message(id, header, size, prio, nodes, remote)) })
                .await;
        self.resolve_queued(id, done).await
    }

    /// Stores messages whose data came whole (each at most one 64 KiB chunk), each with
    /// its chunk and its queue rows, all in one transaction: deliverable (and ackable to
    /// their sender) after a single commit. A message with no nodes is not stored.
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
        let now = super::unix_now();
        let done = retrying("queueing", || async { dispatch!(self, store_messages(messages, now, remote)) }).await;
        self.resolve_queued(first.id, done).await
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
    ///
    /// # Errors
    /// [`StoreError::Db`]; none of them was applied then.
    pub async fn tmtp_acks(&self, acks: &[(Node, i64)]) -> Result<u64, StoreError> {
        retrying("ack", || async { dispatch!(self, acks(acks)) }).await
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
