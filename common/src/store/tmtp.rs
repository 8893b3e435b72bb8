//! The TMTP store (mmtmtpd, spec/tmtp.md §8, §10): accounts, nodes, aliases, groups and
//! the per-node queues, on all three backends. Written once as a macro over each
//! backend's SQL text, like the mail operations (style.md P6).
//!
//! Durability contract (issue 4, spec §8.1): a message's bytes are written in chunks as
//! they arrive, under a row that is not yet `ready`; [`TmtpSql::commit_message`] marks it
//! ready and inserts one queue row per recipient node in one transaction, so the sender's
//! `ack` (sent after that commit) means "durably queued for every recipient node". A
//! recipient's ack deletes its queue row, and the message goes with the last one.

/// SQL text of the TMTP operations for one backend.
pub(crate) struct TmtpSql {
    pub insert_user: &'static str,
    pub insert_node: &'static str,
    /// `(node_uid, node_num)` of the live node with hash `$1`.
    pub node_by_hash: &'static str,
    pub user_exists: &'static str,
    /// Live node numbers of uid `$1`.
    pub nodes: &'static str,
    /// `(count of live nodes, highest num)` of uid `$1`.
    pub node_counts: &'static str,
    /// Copies the queue of (`$3`, `$4`) to (`$1`, `$2`).
    pub copy_queue: &'static str,
    pub alias_owner: &'static str,
    pub insert_alias: &'static str,
    pub group_exists: &'static str,
    /// `(member_uid, member_alias, member_status)` of gid `$1`.
    pub members: &'static str,
    /// `(node_uid, node_num)` of the live nodes of the joined members of gid `$1`.
    pub group_nodes: &'static str,
    pub delete_member: &'static str,
    pub insert_member: &'static str,
    pub begin_message: &'static str,
    pub insert_chunk: &'static str,
    /// Sets header `$1`, size `$2`, ready of message `$3`.
    pub ready_message: &'static str,
    pub enqueue: &'static str,
    /// `(queue_prio, queue_message)` of node (`$1`, `$2`), in delivery order.
    pub queue: &'static str,
    /// The first of those.
    pub queue_next: &'static str,
    /// `(message_header, message_size)` of ready message `$1`.
    pub message: &'static str,
    /// `chunk_data` of message `$1`, chunk `$2`.
    pub chunk: &'static str,
    /// Deletes the queue row (`$1`, `$2`, `$3` message).
    pub dequeue: &'static str,
    /// Deletes message `$1` unless a queue row refers to it (`$2`, the same id).
    pub delete_unqueued: &'static str,
    /// Deletes the chunks of message `$1` unless it still exists (`$2`, the same id).
    pub delete_chunks: &'static str,
    /// Deletes messages not ready (a crash during their upload).
    pub delete_unready: &'static str,
    /// Deletes chunks without a message.
    pub delete_stray_chunks: &'static str,
    pub max_message_id: &'static str,
}

/// Expands the TMTP operations for `$db` with `$sql: TmtpSql`.
macro_rules! tmtp_operations {
    ($db:ty, $sql:expr) => {
        pub(crate) mod tmtp {
            use super::*;
            use crate::store::model::{AliasError, NodeError};

            type Pool = sqlx::Pool<$db>;

            pub(crate) async fn register(
                p: &Pool,
                uid: &str,
                hash: &str,
                now: i64,
                auth: Option<&str>,
            ) -> Result<(), sqlx::Error> {
                let mut tx = write(p).await?;
                let r = async {
                    sqlx::query($sql.insert_user).bind(uid).bind(now).bind(auth).execute(&mut *tx).await?;
                    sqlx::query($sql.insert_node).bind(uid).bind(1i64).bind(hash).execute(&mut *tx).await?;
                    Ok(())
                }
                .await;
                Ok(tx.finish(r).await?)
            }

            pub(crate) async fn node_by_hash(p: &Pool, hash: &str) -> Result<Option<(String, i64)>, sqlx::Error> {
                sqlx::query_as($sql.node_by_hash).bind(hash).fetch_optional(p).await
            }

            pub(crate) async fn user_exists(p: &Pool, uid: &str) -> Result<bool, sqlx::Error> {
                let row: Option<(i64,)> = sqlx::query_as($sql.user_exists).bind(uid).fetch_optional(p).await?;
                Ok(row.is_some())
            }

            pub(crate) async fn nodes(p: &Pool, uid: &str) -> Result<Vec<i64>, sqlx::Error> {
                let rows: Vec<(i64,)> = sqlx::query_as($sql.nodes).bind(uid).fetch_all(p).await?;
                Ok(rows.into_iter().map(|r| r.0).collect())
            }

            pub(crate) async fn add_node(
                p: &Pool,
                uid: &str,
                hash: &str,
                from_num: i64,
                max: i64,
            ) -> Result<Result<i64, NodeError>, sqlx::Error> {
                let mut tx = write(p).await?;
                let r = async {
                    let (live, top): (i64, Option<i64>) =
                        sqlx::query_as($sql.node_counts).bind(uid).fetch_one(&mut *tx).await?;
                    if live >= max {
                        return Ok(Err(NodeError::TooMany));
                    }
                    let num = top.unwrap_or(0) + 1;
                    sqlx::query($sql.insert_node).bind(uid).bind(num).bind(hash).execute(&mut *tx).await?;
                    sqlx::query($sql.copy_queue).bind(uid).bind(num).bind(uid).bind(from_num).execute(&mut *tx).await?;
                    Ok(Ok(num))
                }
                .await;
                Ok(tx.settle(r).await?)
            }

            pub(crate) async fn alias_owner(p: &Pool, alias: &str) -> Result<Option<String>, sqlx::Error> {
                let row: Option<(String,)> = sqlx::query_as($sql.alias_owner).bind(alias).fetch_optional(p).await?;
                Ok(row.map(|r| r.0))
            }

            pub(crate) async fn add_alias(
                p: &Pool,
                uid: &str,
                alias: &str,
            ) -> Result<Result<(), AliasError>, sqlx::Error> {
                let mut tx = write(p).await?;
                let r = async {
                    let owner: Option<(String,)> =
                        sqlx::query_as($sql.alias_owner).bind(alias).fetch_optional(&mut *tx).await?;
                    match owner {
                        Some((o,)) if o == uid => return Ok(Ok(())),
                        Some(_) => return Ok(Err(AliasError::Taken)),
                        None => {}
                    }
                    let group: Option<(i64,)> =
                        sqlx::query_as($sql.group_exists).bind(alias).fetch_optional(&mut *tx).await?;
                    if group.is_some() {
                        return Ok(Err(AliasError::NotAvailable));
                    }
                    sqlx::query($sql.insert_alias).bind(alias).bind(uid).execute(&mut *tx).await?;
                    Ok(Ok(()))
                }
                .await;
                match tx.settle(r).await.map_err(sqlx::Error::from) {
                    // Taken by a concurrent request between the check and the insert.
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(Err(AliasError::Taken)),
                    other => other,
                }
            }

            pub(crate) async fn group_exists(p: &Pool, gid: &str) -> Result<bool, sqlx::Error> {
                let row: Option<(i64,)> = sqlx::query_as($sql.group_exists).bind(gid).fetch_optional(p).await?;
                Ok(row.is_some())
            }

            pub(crate) async fn members(p: &Pool, gid: &str) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
                sqlx::query_as($sql.members).bind(gid).fetch_all(p).await
            }

            pub(crate) async fn group_nodes(p: &Pool, gid: &str) -> Result<Vec<(String, i64)>, sqlx::Error> {
                sqlx::query_as($sql.group_nodes).bind(gid).fetch_all(p).await
            }

            pub(crate) async fn set_members(
                p: &Pool,
                gid: &str,
                rows: &[(&str, &str, i64)],
            ) -> Result<(), sqlx::Error> {
                let mut tx = write(p).await?;
                let r = async {
                    for (uid, alias, status) in rows {
                        sqlx::query($sql.delete_member).bind(gid).bind(*uid).execute(&mut *tx).await?;
                        sqlx::query($sql.insert_member)
                            .bind(gid)
                            .bind(*uid)
                            .bind(*alias)
                            .bind(*status)
                            .execute(&mut *tx)
                            .await?;
                    }
                    Ok(())
                }
                .await;
                Ok(tx.finish(r).await?)
            }

            pub(crate) async fn begin_message(p: &Pool, id: i64, now: i64) -> Result<(), sqlx::Error> {
                let mut tx = write(p).await?;
                let r = sqlx::query($sql.begin_message).bind(id).bind(now).execute(&mut *tx).await;
                tx.finish(r).await.map(drop).map_err(sqlx::Error::from)
            }

            pub(crate) async fn put_chunk(p: &Pool, id: i64, seq: i64, data: &[u8]) -> Result<(), sqlx::Error> {
                let mut tx = write(p).await?;
                let r = sqlx::query($sql.insert_chunk).bind(id).bind(seq).bind(data).execute(&mut *tx).await;
                tx.finish(r).await.map(drop).map_err(sqlx::Error::from)
            }

            pub(crate) async fn commit_message(
                p: &Pool,
                id: i64,
                header: &[u8],
                size: i64,
                prio: &str,
                nodes: &[(String, i64)],
            ) -> Result<(), crate::error::StoreError> {
                let mut tx = write(p).await?;
                let r = async {
                    sqlx::query($sql.ready_message).bind(header).bind(size).bind(id).execute(&mut *tx).await?;
                    for (uid, num) in nodes {
                        sqlx::query($sql.enqueue)
                            .bind(uid.as_str())
                            .bind(*num)
                            .bind(prio)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    Ok(())
                }
                .await;
                tx.finish(r).await?;
                if nodes.is_empty() {
                    discard(p, id).await?;
                }
                Ok(())
            }

            pub(crate) async fn discard(p: &Pool, id: i64) -> Result<(), sqlx::Error> {
                let mut tx = write(p).await?;
                let r = async {
                    sqlx::query($sql.delete_unqueued).bind(id).bind(id).execute(&mut *tx).await?;
                    sqlx::query($sql.delete_chunks).bind(id).bind(id).execute(&mut *tx).await?;
                    Ok(())
                }
                .await;
                Ok(tx.finish(r).await?)
            }

            pub(crate) async fn queue(p: &Pool, uid: &str, num: i64) -> Result<Vec<(String, i64)>, sqlx::Error> {
                sqlx::query_as($sql.queue).bind(uid).bind(num).fetch_all(p).await
            }

            pub(crate) async fn queue_next(
                p: &Pool,
                uid: &str,
                num: i64,
            ) -> Result<Option<(String, i64)>, sqlx::Error> {
                sqlx::query_as($sql.queue_next).bind(uid).bind(num).fetch_optional(p).await
            }

            pub(crate) async fn message(p: &Pool, id: i64) -> Result<Option<(Vec<u8>, i64)>, sqlx::Error> {
                sqlx::query_as($sql.message).bind(id).fetch_optional(p).await
            }

            pub(crate) async fn chunk(p: &Pool, id: i64, seq: i64) -> Result<Option<Vec<u8>>, sqlx::Error> {
                let row: Option<(Vec<u8>,)> = sqlx::query_as($sql.chunk).bind(id).bind(seq).fetch_optional(p).await?;
                Ok(row.map(|r| r.0))
            }

            pub(crate) async fn ack(p: &Pool, uid: &str, num: i64, id: i64) -> Result<bool, sqlx::Error> {
                let mut tx = write(p).await?;
                let r = async {
                    let done = sqlx::query($sql.dequeue).bind(uid).bind(num).bind(id).execute(&mut *tx).await?;
                    sqlx::query($sql.delete_unqueued).bind(id).bind(id).execute(&mut *tx).await?;
                    sqlx::query($sql.delete_chunks).bind(id).bind(id).execute(&mut *tx).await?;
                    Ok(done.rows_affected() > 0)
                }
                .await;
                Ok(tx.finish(r).await?)
            }

            pub(crate) async fn cleanup(p: &Pool) -> Result<u64, sqlx::Error> {
                let mut tx = write(p).await?;
                let r = async {
                    let n = sqlx::query($sql.delete_unready).execute(&mut *tx).await?.rows_affected();
                    sqlx::query($sql.delete_stray_chunks).execute(&mut *tx).await?;
                    Ok(n)
                }
                .await;
                Ok(tx.finish(r).await?)
            }

            pub(crate) async fn max_message_id(p: &Pool) -> Result<i64, sqlx::Error> {
                let row: (Option<i64>,) = sqlx::query_as($sql.max_message_id).fetch_one(p).await?;
                Ok(row.0.unwrap_or(0))
            }
        }
    };
}

pub(crate) use tmtp_operations;

use super::model::{AliasError, Member, NodeError};
use super::{Store, mysql, postgres, sqlite};
use crate::error::StoreError;

macro_rules! on {
    ($self:expr, $f:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Postgres(p) => postgres::tmtp::$f(p, $($arg),*).await,
            Store::MySql(p) => mysql::tmtp::$f(p, $($arg),*).await,
            Store::Sqlite(p) => sqlite::tmtp::$f(p, $($arg),*).await,
        }
    };
}

/// Runs a store transaction again while it fails on a deadlock or busy database.
async fn retry<T, F, Fut>(what: &'static str, f: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut f = f;
    super::retrying(what, move || {
        let fut = f();
        async move { fut.await.map_err(StoreError::from) }
    })
    .await
}

/// A queued message's place: `'E'` (UserEdit results) before `'M'`, then by id.
pub type QueueEntry = (String, i64);

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
        retry("register", || async { on!(self, register(uid, hash, now, auth)) }).await
    }

    /// The `(uid, node number)` of the live node whose stored hash is `hash`.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_node(&self, hash: &str) -> Result<Option<(String, i64)>, StoreError> {
        Ok(on!(self, node_by_hash(hash))?)
    }

    /// Whether account `uid` exists.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_user_exists(&self, uid: &str) -> Result<bool, StoreError> {
        Ok(on!(self, user_exists(uid))?)
    }

    /// The live node numbers of `uid`, ascending.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_nodes(&self, uid: &str) -> Result<Vec<i64>, StoreError> {
        Ok(on!(self, nodes(uid))?)
    }

    /// Adds a node of stored hash `hash` to `uid` (at most `max` live nodes) whose queue
    /// starts as a copy of node `from_num`'s (spec/tmtp.md §5.3); returns its number.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_add_node(
        &self,
        uid: &str,
        hash: &str,
        from_num: i64,
        max: i64,
    ) -> Result<Result<i64, NodeError>, StoreError> {
        retry("add node", || async { on!(self, add_node(uid, hash, from_num, max)) }).await
    }

    /// The uid owning `alias`.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_alias_owner(&self, alias: &str) -> Result<Option<String>, StoreError> {
        Ok(on!(self, alias_owner(alias))?)
    }

    /// Gives `alias` to `uid` (again, when it is already `uid`'s).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_add_alias(&self, uid: &str, alias: &str) -> Result<Result<(), AliasError>, StoreError> {
        retry("add alias", || async { on!(self, add_alias(uid, alias)) }).await
    }

    /// Whether group `gid` exists (has member rows).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_group_exists(&self, gid: &str) -> Result<bool, StoreError> {
        Ok(on!(self, group_exists(gid))?)
    }

    /// The members of `gid`, by uid.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_members(&self, gid: &str) -> Result<Vec<Member>, StoreError> {
        let rows = on!(self, members(gid))?;
        Ok(rows.into_iter().map(|(uid, alias, status)| Member { uid, alias, status }).collect())
    }

    /// The live nodes of the joined members of `gid`, in one query (a group post reaches
    /// them all).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_group_nodes(&self, gid: &str) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(on!(self, group_nodes(gid))?)
    }

    /// Writes member rows `(uid, alias, status)` of `gid` in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_set_members(&self, gid: &str, rows: &[(&str, &str, i64)]) -> Result<(), StoreError> {
        retry("members", || async { on!(self, set_members(gid, rows)) }).await
    }

    /// Starts message `id`: its data chunks may follow ([`Store::tmtp_put_chunk`]); it is
    /// not deliverable before [`Store::tmtp_commit_message`].
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_begin_message(&self, id: i64) -> Result<(), StoreError> {
        let now = super::unix_now();
        retry("upload", || async { on!(self, begin_message(id, now)) }).await
    }

    /// Stores data chunk `seq` (from 0) of message `id`.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_put_chunk(&self, id: i64, seq: i64, data: &[u8]) -> Result<(), StoreError> {
        retry("upload", || async { on!(self, put_chunk(id, seq, data)) }).await
    }

    /// Makes message `id` deliverable with frame header `header` (length digits and
    /// JSON) and `size` data bytes, queued with `prio` to `nodes` `(uid, num)`, all in one
    /// transaction. With no nodes the message is dropped.
    ///
    /// A `COMMIT` without an answer is resolved by asking whether the message is ready
    /// once the database answers again (see [`Store::deliver`]).
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
        nodes: &[(String, i64)],
    ) -> Result<(), StoreError> {
        let done =
            super::retrying("queueing", || async { on!(self, commit_message(id, header, size, prio, nodes)) }).await;
        match done {
            Err(StoreError::CommitUnknown(e)) => {
                match super::resolve("queueing", || async { Ok(on!(self, message(id))?.is_some()) }).await {
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
        retry("discard", || async { on!(self, discard(id)) }).await
    }

    /// The pending messages of node (`uid`, `num`) in delivery order.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_queue(&self, uid: &str, num: i64) -> Result<Vec<QueueEntry>, StoreError> {
        Ok(on!(self, queue(uid, num))?)
    }

    /// The next message for node (`uid`, `num`), if any.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_next(&self, uid: &str, num: i64) -> Result<Option<QueueEntry>, StoreError> {
        Ok(on!(self, queue_next(uid, num))?)
    }

    /// The frame header and data size of deliverable message `id`.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_message(&self, id: i64) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
        Ok(on!(self, message(id))?)
    }

    /// Data chunk `seq` of message `id`.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_chunk(&self, id: i64, seq: i64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(on!(self, chunk(id, seq))?)
    }

    /// Node (`uid`, `num`) acknowledged message `id`: its queue row goes, and the message
    /// with its last one. False when it was not queued there.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_ack(&self, uid: &str, num: i64, id: i64) -> Result<bool, StoreError> {
        retry("ack", || async { on!(self, ack(uid, num, id)) }).await
    }

    /// At start: removes messages whose upload never finished; returns how many.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_cleanup(&self) -> Result<u64, StoreError> {
        retry("cleanup", || async { on!(self, cleanup()) }).await
    }

    /// The highest message id stored (0 when none): ids must keep growing across
    /// restarts (spec/tmtp.md §4.4).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn tmtp_max_message_id(&self) -> Result<i64, StoreError> {
        Ok(on!(self, max_message_id())?)
    }
}
