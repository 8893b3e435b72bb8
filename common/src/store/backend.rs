//! The store operations, written once and expanded per backend with that backend's SQL
//! text (style.md P6: each backend owns its SQL; the flow around it is identical). Every
//! write runs in a [`Write`](super::write::Write) transaction.

/// SQL text of one backend. Placeholders are `$n` on PostgreSQL, `?` elsewhere.
pub(crate) struct Sql {
    pub find_box: &'static str,
    pub aliases: &'static str,
    pub domain_has_box: &'static str,
    pub nofrom: &'static str,
    /// Adds one message of `$1` bytes to box `$2` if it is under both limits.
    pub take_room: &'static str,
    pub insert_mail: &'static str,
    pub maildrop: &'static str,
    /// 1 if a mail row with uid `$1` exists.
    pub mail_by_uid: &'static str,
    pub retrieve: &'static str,
    pub recount: &'static str,
    pub user_password: &'static str,
    pub set_user_password: &'static str,
    /// `(user_id, user_name, user_passwd)` of the user owning box `$1`.
    pub box_owner: &'static str,
    /// Sets `user_passwd = $1` of user `$2` if it is still `$3`.
    pub replace_password: &'static str,
    /// Deletes the lease of box `$1` if it expired before `$2`.
    pub lock_clear_expired: &'static str,
    /// Inserts the lease (`$1` box, `$2` owner, `$3` expiry) unless the box has one.
    pub lock_insert: &'static str,
    /// Sets `lock_expires = $1` of box `$2` held by `$3`.
    pub lock_refresh: &'static str,
    /// Deletes the lease of box `$1` held by `$2`.
    pub lock_release: &'static str,
    /// Deletes the lease of box `$1` held by `$2` if it has not expired before `$3`.
    pub lock_release_live: &'static str,
    /// `(mail_size, mail_message)` of mail `$1` in box `$2`.
    pub mail_for_delete: &'static str,
    pub delete_mail: &'static str,
    /// Subtracts `$1` bytes and `$2` messages (never below 0) from box `$3`, sets box_out.
    pub settle_box: &'static str,
    /// Deletes message body `$1` if no mail row (`$2`, the same id) refers to it.
    pub delete_orphan: &'static str,
}

/// Expands the operations for `$db` using `$sql: Sql` and `$insert_message`, an
/// `async fn(&mut Connection, size, created, data) -> Result<i64, sqlx::Error>`. The
/// backend module defines `BEGIN` (how a write transaction begins) and
/// `fn keep(&Pool) -> bool` (see [`Write`](super::write::Write)).
macro_rules! operations {
    ($db:ty, $sql:expr, $insert_message:ident) => {
        use crate::store::model::{BoxInfo, BoxOwner, DeliverError, Delivery, MailEntry, Retrieved, Update};

        type Pool = sqlx::Pool<$db>;
        type BoxRow = (String, i64, i64, i64, i64, i64);

        /// A write transaction on `p`.
        async fn write(p: &Pool) -> Result<crate::store::write::Write<$db>, sqlx::Error> {
            crate::store::write::Write::begin(p, BEGIN, keep(p)).await
        }

        fn box_info(r: BoxRow) -> BoxInfo {
            BoxInfo { address: r.0, user: r.1, max_size: r.2, size: r.3, max_mails: r.4, mails: r.5 }
        }

        pub(crate) async fn find_box(p: &Pool, address: &str) -> Result<Option<BoxInfo>, sqlx::Error> {
            let row: Option<BoxRow> = sqlx::query_as($sql.find_box).bind(address).fetch_optional(p).await?;
            Ok(row.map(box_info))
        }

        pub(crate) async fn aliases(p: &Pool) -> Result<Vec<(String, String)>, sqlx::Error> {
            sqlx::query_as($sql.aliases).fetch_all(p).await
        }

        pub(crate) async fn domain_has_box(p: &Pool, like: &str) -> Result<bool, sqlx::Error> {
            let row: Option<(i64,)> = sqlx::query_as($sql.domain_has_box).bind(like).fetch_optional(p).await?;
            Ok(row.is_some())
        }

        pub(crate) async fn nofrom(p: &Pool) -> Result<Vec<String>, sqlx::Error> {
            let rows: Vec<(String,)> = sqlx::query_as($sql.nofrom).fetch_all(p).await?;
            Ok(rows.into_iter().map(|r| r.0).collect())
        }

        pub(crate) async fn deliver(p: &Pool, d: &Delivery<'_>, now: i64) -> Result<(), DeliverError> {
            let body_len = i64::try_from(d.body.len()).unwrap_or(i64::MAX);
            let mut copies: Vec<_> = d.copies.iter().collect();
            // Lock boxes in one global order so concurrent deliveries cannot deadlock.
            copies.sort_by(|a, b| a.box_address.cmp(&b.box_address));
            let mut tx = write(p).await?;
            let r = async {
                for c in &copies {
                    let size = body_len.saturating_add(c.trace.len() as i64);
                    let done = sqlx::query($sql.take_room).bind(size).bind(&c.box_address).execute(&mut *tx).await?;
                    if done.rows_affected() == 0 {
                        return Ok(Err(c.box_address.clone()));
                    }
                }
                let message_id = $insert_message(&mut *tx, body_len, now, d.body).await?;
                for c in &copies {
                    let size = body_len.saturating_add(c.trace.len() as i64);
                    sqlx::query($sql.insert_mail)
                        .bind(&c.uid)
                        .bind(&c.box_address)
                        .bind(message_id)
                        .bind(size)
                        .bind(now)
                        .bind(&c.trace)
                        .execute(&mut *tx)
                        .await?;
                }
                Ok(Ok(()))
            }
            .await;
            tx.settle(r).await.map_err(crate::error::StoreError::from)?.map_err(DeliverError::NoRoom)
        }

        pub(crate) async fn mail_stored(p: &Pool, uid: &str) -> Result<bool, sqlx::Error> {
            let row: Option<(i64,)> = sqlx::query_as($sql.mail_by_uid).bind(uid).fetch_optional(p).await?;
            Ok(row.is_some())
        }

        pub(crate) async fn mail_present(p: &Pool, address: &str, ids: &[i64]) -> Result<bool, sqlx::Error> {
            for id in ids {
                let row: Option<(i64, i64)> =
                    sqlx::query_as($sql.mail_for_delete).bind(id).bind(address).fetch_optional(p).await?;
                if row.is_some() {
                    return Ok(true);
                }
            }
            Ok(false)
        }

        pub(crate) async fn maildrop(p: &Pool, address: &str) -> Result<Vec<MailEntry>, sqlx::Error> {
            let rows: Vec<(i64, String, i64)> = sqlx::query_as($sql.maildrop).bind(address).fetch_all(p).await?;
            Ok(rows.into_iter().map(|(id, uid, size)| MailEntry { id, uid, size }).collect())
        }

        pub(crate) async fn retrieve(p: &Pool, address: &str, id: i64) -> Result<Option<Retrieved>, sqlx::Error> {
            let row: Option<(Vec<u8>, Vec<u8>)> =
                sqlx::query_as($sql.retrieve).bind(id).bind(address).fetch_optional(p).await?;
            Ok(row.map(|(trace, body)| Retrieved { trace, body }))
        }

        pub(crate) async fn recount(p: &Pool, address: &str) -> Result<(i64, i64), sqlx::Error> {
            let row: (Option<i64>, i64) = sqlx::query_as($sql.recount).bind(address).fetch_one(p).await?;
            Ok((row.0.unwrap_or(0), row.1))
        }

        pub(crate) async fn user_password(p: &Pool, name: &str) -> Result<Option<(i64, String)>, sqlx::Error> {
            sqlx::query_as($sql.user_password).bind(name).fetch_optional(p).await
        }

        pub(crate) async fn set_user_password(p: &Pool, name: &str, hash: &str) -> Result<bool, sqlx::Error> {
            let mut tx = write(p).await?;
            let r = sqlx::query($sql.set_user_password).bind(hash).bind(name).execute(&mut *tx).await;
            Ok(tx.finish(r).await?.rows_affected() > 0)
        }

        pub(crate) async fn box_owner(p: &Pool, address: &str) -> Result<Option<BoxOwner>, sqlx::Error> {
            let row: Option<(i64, String, String)> =
                sqlx::query_as($sql.box_owner).bind(address).fetch_optional(p).await?;
            Ok(row.map(|(user_id, user_name, passwd)| BoxOwner { user_id, user_name, passwd }))
        }

        pub(crate) async fn replace_password(
            p: &Pool,
            user_id: i64,
            old: &str,
            new: &str,
        ) -> Result<bool, sqlx::Error> {
            let mut tx = write(p).await?;
            let r = sqlx::query($sql.replace_password).bind(new).bind(user_id).bind(old).execute(&mut *tx).await;
            Ok(tx.finish(r).await?.rows_affected() > 0)
        }

        pub(crate) async fn lock_box(
            p: &Pool,
            address: &str,
            owner: &str,
            now: i64,
            expires: i64,
        ) -> Result<bool, sqlx::Error> {
            let mut tx = write(p).await?;
            let r = async {
                sqlx::query($sql.lock_clear_expired).bind(address).bind(now).execute(&mut *tx).await?;
                let done =
                    sqlx::query($sql.lock_insert).bind(address).bind(owner).bind(expires).execute(&mut *tx).await?;
                Ok(done.rows_affected() > 0)
            }
            .await;
            Ok(tx.finish(r).await?)
        }

        pub(crate) async fn refresh_lock(
            p: &Pool,
            address: &str,
            owner: &str,
            expires: i64,
        ) -> Result<bool, sqlx::Error> {
            let mut tx = write(p).await?;
            let r = sqlx::query($sql.lock_refresh).bind(expires).bind(address).bind(owner).execute(&mut *tx).await;
            Ok(tx.finish(r).await?.rows_affected() > 0)
        }

        pub(crate) async fn unlock_box(p: &Pool, address: &str, owner: &str) -> Result<(), sqlx::Error> {
            let mut tx = write(p).await?;
            let r = sqlx::query($sql.lock_release).bind(address).bind(owner).execute(&mut *tx).await;
            tx.finish(r).await?;
            Ok(())
        }

        pub(crate) async fn commit_deletions(
            p: &Pool,
            address: &str,
            owner: &str,
            now: i64,
            ids: &[i64],
        ) -> Result<Update, crate::error::StoreError> {
            let mut tx = write(p).await?;
            let r = async {
                // The lease check and its release, in the transaction that deletes: the
                // row stays locked by this transaction until it commits.
                let held =
                    sqlx::query($sql.lock_release_live).bind(address).bind(owner).bind(now).execute(&mut *tx).await?;
                if held.rows_affected() == 0 {
                    return Ok(Err(Update::LockLost));
                }
                let (mut bytes, mut count) = (0i64, 0i64);
                let mut bodies: Vec<i64> = Vec::new();
                for id in ids {
                    let row: Option<(i64, i64)> =
                        sqlx::query_as($sql.mail_for_delete).bind(id).bind(address).fetch_optional(&mut *tx).await?;
                    let Some((size, message)) = row else { continue };
                    sqlx::query($sql.delete_mail).bind(id).bind(address).execute(&mut *tx).await?;
                    bytes = bytes.saturating_add(size);
                    count += 1;
                    if !bodies.contains(&message) {
                        bodies.push(message);
                    }
                }
                sqlx::query($sql.settle_box).bind(bytes).bind(count).bind(address).execute(&mut *tx).await?;
                for m in bodies {
                    sqlx::query($sql.delete_orphan).bind(m).bind(m).execute(&mut *tx).await?;
                }
                Ok(Ok(Update::Deleted(count as u64)))
            }
            .await;
            Ok(tx.settle(r).await?.unwrap_or_else(|lost| lost))
        }
    };
}

pub(crate) use operations;
