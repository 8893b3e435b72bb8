//! The store operations, written once and expanded per backend with that backend's SQL
//! text (style.md P6: each backend owns its SQL; the flow around it is identical).

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
    pub retrieve: &'static str,
    pub recount: &'static str,
    pub user_password: &'static str,
    pub set_user_password: &'static str,
}

/// Expands the operations for `$db` using `$sql: Sql` and `$insert_message`, an
/// `async fn(&mut Transaction, size, created, data) -> Result<i64, sqlx::Error>`.
macro_rules! operations {
    ($db:ty, $sql:expr, $insert_message:ident) => {
        use crate::store::model::{BoxInfo, DeliverError, Delivery, MailEntry};

        type Pool = sqlx::Pool<$db>;
        type BoxRow = (String, i64, i64, i64, i64, i64);

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
            let mut tx = p.begin().await?;
            for c in &copies {
                let size = body_len.saturating_add(c.trace.len() as i64);
                let done = sqlx::query($sql.take_room).bind(size).bind(&c.box_address).execute(&mut *tx).await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Err(DeliverError::NoRoom(c.box_address.clone()));
                }
            }
            let message_id = $insert_message(&mut tx, body_len, now, d.body).await?;
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
            tx.commit().await?;
            Ok(())
        }

        pub(crate) async fn maildrop(p: &Pool, address: &str) -> Result<Vec<MailEntry>, sqlx::Error> {
            let rows: Vec<(i64, String, i64)> = sqlx::query_as($sql.maildrop).bind(address).fetch_all(p).await?;
            Ok(rows.into_iter().map(|(id, uid, size)| MailEntry { id, uid, size }).collect())
        }

        pub(crate) async fn retrieve(p: &Pool, address: &str, id: i64) -> Result<Option<Vec<u8>>, sqlx::Error> {
            let row: Option<(Vec<u8>, Vec<u8>)> =
                sqlx::query_as($sql.retrieve).bind(id).bind(address).fetch_optional(p).await?;
            Ok(row.map(|(mut trace, body)| {
                trace.extend_from_slice(&body);
                trace
            }))
        }

        pub(crate) async fn recount(p: &Pool, address: &str) -> Result<(i64, i64), sqlx::Error> {
            let row: (Option<i64>, i64) = sqlx::query_as($sql.recount).bind(address).fetch_one(p).await?;
            Ok((row.0.unwrap_or(0), row.1))
        }

        pub(crate) async fn user_password(p: &Pool, name: &str) -> Result<Option<(i64, String)>, sqlx::Error> {
            sqlx::query_as($sql.user_password).bind(name).fetch_optional(p).await
        }

        pub(crate) async fn set_user_password(p: &Pool, name: &str, hash: &str) -> Result<bool, sqlx::Error> {
            let done = sqlx::query($sql.set_user_password).bind(hash).bind(name).execute(p).await?;
            Ok(done.rows_affected() > 0)
        }
    };
}

pub(crate) use operations;
