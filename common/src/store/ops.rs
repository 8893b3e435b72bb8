//! The store's operations, written once (style.md P6) and expanded by [`operations!`] in
//! each backend module (`postgres`, `mysql`, `sqlite`) over that backend's pool: sqlx's
//! generic bounds over three drivers would hide the SQL under trait noise, a macro keeps
//! it plain. The statements come from [`Sql`](super::sql::Sql); every write is a
//! [`Write`](super::write::Write) transaction. The backend module provides only what
//! really differs: `DIALECT`, `BEGIN` (how a write transaction begins) and `keep(&Pool)`
//! (the in-memory SQLite pool); and the macro is told how a new message id comes back
//! (`returning`, or MySQL's `last_insert_id`).
//!
//! TMTP's durability contract (spec/tmtp.md §8.1): a message's bytes are written in
//! chunks as they arrive, under a row that is not yet `ready`; `commit_message` marks it
//! ready and inserts one queue row per recipient node in one transaction, so the sender's
//! `ack` (sent after that commit) means "durably queued for every recipient node". A
//! message whose data fits one chunk skips the chunked path: `store_messages` writes it,
//! its chunk and its queue rows (a PostNotify: both messages) in one transaction. A
//! recipient's ack deletes its queue row, and the message goes with the last one.

/// The id of the row `$sql` (an INSERT with 3 parameters) inserts on `$conn`:
/// from its `RETURNING` clause, or from MySQL's last insert id.
macro_rules! message_id {
    (returning, $conn:expr, $sql:expr, $a:expr, $b:expr, $c:expr) => {{
        let (id,): (i64,) = sqlx::query_as($sql).bind($a).bind($b).bind($c).fetch_one($conn).await?;
        Ok(id)
    }};
    (last_insert_id, $conn:expr, $sql:expr, $a:expr, $b:expr, $c:expr) => {{
        let done = sqlx::query($sql).bind($a).bind($b).bind($c).execute($conn).await?;
        i64::try_from(done.last_insert_id()).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    }};
}

/// Whether statement `$sql` with the arguments bound returns a row on `$e`.
macro_rules! exists {
    ($e:expr, $sql:expr $(, $arg:expr)*) => {
        sqlx::query($sql)$(.bind($arg))*.fetch_optional($e).await.map(|r| r.is_some())
    };
}

/// `items` cut into chunks of exactly `N` for a chunked statement, the last one padded
/// with its own last item. None for no items.
pub(crate) fn padded<T: Copy, const N: usize>(items: &[T]) -> impl Iterator<Item = [T; N]> + '_ {
    items.chunks(N).map(|c| {
        let mut chunk = [c[c.len() - 1]; N];
        chunk[..c.len()].copy_from_slice(c);
        chunk
    })
}

/// `ids` as a PostgreSQL array literal, `{1,2,3}`, for the statements that take all ids
/// at once as `$n::text::bigint[]` ([`PG_DELETE_MAILS`](crate::store::sql::PG_DELETE_MAILS)).
pub(crate) fn pg_id_array(ids: &[i64]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(2 + ids.len() * 8);
    s.push('{');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{id}");
    }
    s.push('}');
    s
}

/// `items` as a PostgreSQL text array literal, `{"a","b\"c"}`: every element quoted, a
/// backslash or a double quote in it escaped by a backslash (PostgreSQL, "Array Value
/// Input").
pub(crate) fn pg_text_array<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut s = String::from("{");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                s.push('\\');
            }
            s.push(c);
        }
        s.push('"');
    }
    s.push('}');
    s
}

/// `ids` cut into chunks of exactly [`ID_CHUNK`](crate::store::sql::ID_CHUNK) for the
/// chunked statements, the last one padded with its own last id. None for no ids.
pub(crate) fn id_chunks(ids: &[i64]) -> impl Iterator<Item = [i64; crate::store::sql::ID_CHUNK]> + '_ {
    padded(ids)
}

/// Expands every operation for backend `$db` (a `sqlx::Database`); `$id` is how an
/// inserted message's id comes back (see [`message_id!`]).
macro_rules! operations {
    ($db:ty, $id:ident) => {
        use crate::error::StoreError;
        use crate::store::Quit;
        use crate::store::model::{
            AddAlias, AddNode, BoxEntry, BoxInfo, BoxOwner, DeliverError, Delivery, MailEntry, Member, MemberStatus,
            Node, OwnsBoxes, Queued, Repaired, Retrieved, Run, TmtpMessage, TmtpOp, Update, Usage, User, UserEntry,
            WholeMessage,
        };
        use crate::store::sql::Sql;

        type Pool = sqlx::Pool<$db>;
        type Result<T> = std::result::Result<T, StoreError>;

        /// The statements, rendered for this backend at first use.
        static SQL: std::sync::LazyLock<Sql> = std::sync::LazyLock::new(|| Sql::new(DIALECT));

        /// A write transaction on `p`.
        async fn write(p: &Pool) -> std::result::Result<crate::store::write::Write<$db>, sqlx::Error> {
            write_held(p, false).await
        }

        /// A write transaction on `p`; with `turn_held` the caller already holds SQLite's
        /// writer turn (a batch run by `together`), which is then not waited for again.
        async fn write_held(
            p: &Pool,
            turn_held: bool,
        ) -> std::result::Result<crate::store::write::Write<$db>, sqlx::Error> {
            let turn = if turn_held { None } else { turn(p) };
            crate::store::write::Write::begin(p, BEGIN, keep(p), turn, checkpoint(p)).await
        }

        /// Stores a message body; its id.
        async fn insert_message(
            conn: &mut <$db as sqlx::Database>::Connection,
            size: i64,
            created: i64,
            data: &[u8],
        ) -> std::result::Result<i64, sqlx::Error> {
            crate::store::ops::message_id!($id, &mut *conn, SQL.insert_message, size, created, data)
        }

        /// Runs each of `statements` over `ids`: each a pair of the chunked statement
        /// (naming [`ID_CHUNK`](crate::store::sql::ID_CHUNK) ids, `$1`…`$128`), run a
        /// chunk at a time, and its PostgreSQL form taking all ids at once as `$1`, a
        /// bigint array literal ([`pg_id_array`](crate::store::ops::pg_id_array)), run once.
        async fn over_ids(
            conn: &mut <$db as sqlx::Database>::Connection,
            statements: &[(&'static str, &'static str)],
            ids: &[i64],
        ) -> std::result::Result<(), sqlx::Error> {
            if DIALECT == crate::store::sql::Dialect::Postgres {
                if !ids.is_empty() {
                    let list = crate::store::ops::pg_id_array(ids);
                    for (_, all) in statements {
                        sqlx::query(*all).bind(&list).execute(&mut *conn).await?;
                    }
                }
                return Ok(());
            }
            for chunk in crate::store::ops::id_chunks(ids) {
                for (sql, _) in statements {
                    chunk.iter().fold(sqlx::query(*sql), |q, id| q.bind(*id)).execute(&mut *conn).await?;
                }
            }
            Ok(())
        }

        /// Deletes the message bodies among `ids` that no copy refers to any more.
        async fn delete_orphans(
            conn: &mut <$db as sqlx::Database>::Connection,
            ids: &[i64],
        ) -> std::result::Result<(), sqlx::Error> {
            over_ids(conn, &[(SQL.delete_orphans, crate::store::sql::PG_DELETE_ORPHANS)], ids).await
        }

        // --- boxes, aliases, nofrom ---

        pub(crate) async fn find_box(p: &Pool, address: &str) -> Result<Option<BoxInfo>> {
            let row: Option<(String, i64, i64, i64, i64, i64)> =
                sqlx::query_as(SQL.find_box).bind(address).fetch_optional(p).await?;
            Ok(row.map(|r| BoxInfo { address: r.0, user: r.1, max_size: r.2, size: r.3, max_mails: r.4, mails: r.5 }))
        }

        pub(crate) async fn aliases(p: &Pool) -> Result<Vec<(String, String)>> {
            Ok(sqlx::query_as(SQL.aliases).fetch_all(p).await?)
        }

        pub(crate) async fn domain_has_box(p: &Pool, like: &str) -> Result<bool> {
            Ok(crate::store::ops::exists!(p, SQL.domain_has_box, like)?)
        }

        pub(crate) async fn nofrom(p: &Pool) -> Result<Vec<String>> {
            let rows: Vec<(String,)> = sqlx::query_as(SQL.nofrom).fetch_all(p).await?;
            Ok(rows.into_iter().map(|r| r.0).collect())
        }

        pub(crate) async fn mixed_case_boxes(p: &Pool) -> Result<Vec<String>> {
            let rows: Vec<(String,)> = sqlx::query_as(SQL.mixed_case_boxes).fetch_all(p).await?;
            Ok(rows.into_iter().map(|r| r.0).collect())
        }

        // --- delivery and retrieval ---

        pub(crate) async fn deliver(p: &Pool, d: &Delivery<'_>, now: i64) -> std::result::Result<(), DeliverError> {
            use crate::store::sql::{Dialect, MYSQL_DELIVER_ONE, PG_DELIVER_ONE, PG_DELIVER_ONE_MAX};
            if let [copy] = d.copies.as_slice() {
                match DIALECT {
                    Dialect::Postgres if d.body.len() <= PG_DELIVER_ONE_MAX => {
                        return deliver_one(p, PG_DELIVER_ONE, d.body, copy, now).await;
                    }
                    Dialect::MySql => return deliver_one(p, MYSQL_DELIVER_ONE, d.body, copy, now).await,
                    _ => {}
                }
            }
            let mut tx = write(p).await.map_err(StoreError::from)?;
            let r = deliver_in(&mut *tx, d, now, false).await;
            tx.settle(r).await.map_err(StoreError::from)?.map_err(DeliverError::NoRoom)
        }

        /// A delivery of one copy in one round trip: `statement` is
        /// [`PG_DELIVER_ONE`](crate::store::sql::PG_DELIVER_ONE) or
        /// [`MYSQL_DELIVER_ONE`](crate::store::sql::MYSQL_DELIVER_ONE), which commits on
        /// its own and returns a row when the copy was stored. An error the server
        /// reports is judged as a refused `COMMIT` is (`write::refused_for_sure`: on
        /// MySQL only a deadlock or lost certification is a sure refusal); a statement
        /// sent that got no answer may have committed. Both in doubt are
        /// [`StoreError::CommitUnknown`], resolved by `Store::deliver` by looking for the
        /// copy.
        async fn deliver_one(
            p: &Pool,
            statement: &'static str,
            body: &[u8],
            copy: &crate::store::model::MailCopy,
            now: i64,
        ) -> std::result::Result<(), DeliverError> {
            let mut conn = p.acquire().await.map_err(StoreError::from)?;
            let done = deliver_one_query(statement, body, copy, now).fetch_optional(&mut *conn).await;
            match done {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(DeliverError::NoRoom(copy.box_address.clone())),
                // A constraint is checked by the statement that breaks it, never by the
                // COMMIT (none is deferred): such an error is a sure refusal everywhere.
                Err(e)
                    if crate::store::write::refused_for_sure::<$db>(&e) || crate::store::ops::broke_constraint(&e) =>
                {
                    Err(StoreError::Db(e).into())
                }
                Err(e) => {
                    conn.close_on_drop();
                    Err(StoreError::CommitUnknown(e).into())
                }
            }
        }

        /// SQLite: the deliveries `single` of `ds` (each of one copy) in calls of up to
        /// [`SQLITE_DELIVER_MANY_MAX`](crate::store::sql::SQLITE_DELIVER_MANY_MAX)
        /// ([`sqlite_deliver_many`](crate::store::sql::sqlite_deliver_many)), inside the
        /// caller's transaction; a copy refused for a full box gets `Err(box)` in
        /// `answers`, the others keep theirs.
        async fn sqlite_deliver_singles(
            conn: &mut <$db as sqlx::Database>::Connection,
            ds: &[Delivery<'_>],
            single: &[usize],
            now: i64,
            answers: &mut [std::result::Result<(), String>],
        ) -> std::result::Result<(), sqlx::Error> {
            let params = crate::store::sql::sqlite_deliver_order();
            let mut rest = single;
            while !rest.is_empty() {
                let n = crate::store::sql::SQLITE_DELIVER_MANY_MAX.min(1 << rest.len().ilog2());
                let (chunk, after) = rest.split_at(n);
                rest = after;
                let q = chunk.iter().fold(sqlx::query(crate::store::sql::sqlite_deliver_many(n)), |q, &i| {
                    let (body, c) = (ds[i].body, &ds[i].copies[0]);
                    params.iter().fold(q, |q, &parameter| bind_delivery(q, parameter, body, c, now))
                });
                let mut refused = vec![true; n];
                for row in q.fetch_all(&mut *conn).await? {
                    let k: i64 = sqlx::Row::try_get(&row, 0)?;
                    if let Some(r) = usize::try_from(k).ok().and_then(|k| refused.get_mut(k)) {
                        *r = false;
                    }
                }
                for (&i, refused) in chunk.iter().zip(refused) {
                    if refused {
                        answers[i] = Err(ds[i].copies[0].box_address.clone());
                    }
                }
            }
            Ok(())
        }

        /// `statement` ([`PG_DELIVER_ONE`](crate::store::sql::PG_DELIVER_ONE) or
        /// [`MYSQL_DELIVER_ONE`](crate::store::sql::MYSQL_DELIVER_ONE)) bound for one copy
        /// of `body` at time `now` (Unix seconds): its seven parameters in their order.
        fn deliver_one_query<'q>(
            statement: &'static str,
            body: &'q [u8],
            copy: &'q crate::store::model::MailCopy,
            now: i64,
        ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
            (1..=7).fold(sqlx::query(statement), |q, parameter| bind_delivery(q, parameter, body, copy, now))
        }

        /// `q` with parameter `parameter` of a delivery of one copy bound, as
        /// [`PG_DELIVER_ONE`](crate::store::sql::PG_DELIVER_ONE) numbers them: 1 copy
        /// size (body and trace, bytes), 2 box, 3 body size (bytes), 4 time `now` (Unix
        /// seconds), 5 body, 6 uid, 7 trace.
        fn bind_delivery<'q>(
            q: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>,
            parameter: usize,
            body: &'q [u8],
            copy: &'q crate::store::model::MailCopy,
            now: i64,
        ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
            let body_len = i64::try_from(body.len()).unwrap_or(i64::MAX);
            match parameter {
                1 => q.bind(body_len.saturating_add(copy.trace.len() as i64)),
                2 => q.bind(&copy.box_address),
                3 => q.bind(body_len),
                4 => q.bind(now),
                5 => q.bind(body),
                6 => q.bind(&copy.uid),
                _ => q.bind(&copy.trace),
            }
        }

        /// Deliveries taken together (see `Store::deliver`), in one transaction begun
        /// without taking the writer turn (SQLite), which the caller holds: each stored,
        /// or refused alone for a full box (its answer `Err(box)`), as [`deliver`] would.
        /// On PostgreSQL a batch of one is stored as [`deliver`] stores it, and in a larger
        /// one each delivery of one copy is one statement
        /// ([`PG_DELIVER_ONE`](crate::store::sql::PG_DELIVER_ONE), which changes nothing
        /// when the box is full). On SQLite the deliveries of one copy go up to 16 to a
        /// call ([`sqlite_deliver_many`](crate::store::sql::sqlite_deliver_many)). The
        /// SQLite and PostgreSQL stores take deliveries together.
        #[allow(dead_code)]
        pub(crate) async fn deliver_together(
            p: &Pool,
            ds: &[Delivery<'_>],
            now: i64,
        ) -> Result<Vec<std::result::Result<(), String>>> {
            use crate::store::sql::{Dialect, PG_DELIVER_ONE};
            if let (Dialect::Postgres, [d]) = (DIALECT, ds) {
                // Alone after all: as `deliver` stores it (one statement when it can).
                return match deliver(p, d, now).await {
                    Ok(()) => Ok(vec![Ok(())]),
                    Err(DeliverError::NoRoom(b)) => Ok(vec![Err(b)]),
                    Err(DeliverError::Store(e)) => Err(e),
                };
            }
            // Box rows are taken in one global order (by address, as `deliver_in` takes a
            // delivery's own), so that batches running at once on PostgreSQL do not wait
            // for each other crosswise; a delivery of several copies is placed by its
            // first, and a deadlock it may still cause is retried as any other.
            let first_box = |i: usize| ds[i].copies.iter().map(|c| c.box_address.as_str()).min();
            let mut order: Vec<usize> = (0..ds.len()).collect();
            order.sort_by(|&a, &b| first_box(a).cmp(&first_box(b)));
            let mut tx = write_held(p, true).await?;
            let r = async {
                let mut answers = vec![Ok(()); ds.len()];
                if DIALECT == Dialect::Sqlite {
                    // Deliveries of one copy, several per call (no row locks to order).
                    let single: Vec<usize> = order.iter().copied().filter(|&i| ds[i].copies.len() == 1).collect();
                    order.retain(|&i| ds[i].copies.len() != 1);
                    sqlite_deliver_singles(&mut *tx, ds, &single, now, &mut answers).await?;
                }
                for &i in &order {
                    let d = &ds[i];
                    let answer = match (DIALECT, d.copies.as_slice()) {
                        (Dialect::Postgres, [c]) => {
                            let stored =
                                deliver_one_query(PG_DELIVER_ONE, d.body, c, now).fetch_optional(&mut *tx).await?;
                            if stored.is_some() { Ok(()) } else { Err(c.box_address.clone()) }
                        }
                        _ => deliver_in(&mut *tx, d, now, true).await?,
                    };
                    answers[i] = answer;
                }
                Ok(answers)
            }
            .await;
            Ok(tx.finish(r).await?)
        }

        /// The statements of one delivery on `conn`, inside a transaction: `Ok(Err(box))`
        /// when a box is full. Alone (`together` false) the body comes first: it takes
        /// no lock on a box, so the boxes' rows are held (and, on Galera, open to
        /// conflicts with other nodes) only from there to the commit. Taken together
        /// with others, a refusal must leave the transaction as it found it: the box
        /// row comes first, so that a single copy refused has changed nothing, and
        /// several copies run under a savepoint that a refusal rolls back. On SQLite a
        /// delivery of one copy is the one call
        /// [`SQLITE_DELIVER_ONE`](crate::store::sql::SQLITE_DELIVER_ONE).
        async fn deliver_in(
            conn: &mut <$db as sqlx::Database>::Connection,
            d: &Delivery<'_>,
            now: i64,
            together: bool,
        ) -> std::result::Result<std::result::Result<(), String>, sqlx::Error> {
            if let (crate::store::sql::Dialect::Sqlite, [c]) = (DIALECT, d.copies.as_slice()) {
                // No row locks to order: one call for the whole copy.
                let stored = deliver_one_query(crate::store::sql::SQLITE_DELIVER_ONE, d.body, c, now)
                    .fetch_optional(&mut *conn)
                    .await?;
                return Ok(if stored.is_some() { Ok(()) } else { Err(c.box_address.clone()) });
            }
            let body_len = i64::try_from(d.body.len()).unwrap_or(i64::MAX);
            let mut copies: Vec<_> = d.copies.iter().collect();
            // Lock boxes in one global order so concurrent deliveries cannot deadlock.
            copies.sort_by(|a, b| a.box_address.cmp(&b.box_address));
            let savepoint = together && copies.len() > 1;
            if savepoint {
                sqlx::raw_sql("SAVEPOINT delivery").execute(&mut *conn).await?;
            }
            let message_id =
                if together { None } else { Some(insert_message(&mut *conn, body_len, now, d.body).await?) };
            for c in &copies {
                let size = body_len.saturating_add(c.trace.len() as i64);
                let done = sqlx::query(SQL.take_room).bind(size).bind(&c.box_address).execute(&mut *conn).await?;
                if done.rows_affected() == 0 {
                    if savepoint {
                        sqlx::raw_sql("ROLLBACK TO SAVEPOINT delivery; RELEASE SAVEPOINT delivery")
                            .execute(&mut *conn)
                            .await?;
                    }
                    return Ok(Err(c.box_address.clone()));
                }
            }
            let message_id = match message_id {
                Some(id) => id,
                None => insert_message(&mut *conn, body_len, now, d.body).await?,
            };
            for c in &copies {
                let size = body_len.saturating_add(c.trace.len() as i64);
                sqlx::query(SQL.insert_mail)
                    .bind(&c.uid)
                    .bind(&c.box_address)
                    .bind(message_id)
                    .bind(size)
                    .bind(now)
                    .bind(&c.trace)
                    .execute(&mut *conn)
                    .await?;
            }
            if savepoint {
                sqlx::raw_sql("RELEASE SAVEPOINT delivery").execute(&mut *conn).await?;
            }
            Ok(Ok(()))
        }

        pub(crate) async fn mail_stored(p: &Pool, uid: &str) -> Result<bool> {
            Ok(crate::store::ops::exists!(p, SQL.mail_by_uid, uid)?)
        }

        pub(crate) async fn maildrop(p: &Pool, address: &str) -> Result<Vec<MailEntry>> {
            let rows: Vec<(i64, String, i64)> = sqlx::query_as(SQL.maildrop).bind(address).fetch_all(p).await?;
            Ok(rows.into_iter().map(|(id, uid, size)| MailEntry { id, uid, size }).collect())
        }

        pub(crate) async fn retrieve(p: &Pool, address: &str, id: i64) -> Result<Option<Retrieved>> {
            let row: Option<(Vec<u8>, Vec<u8>)> =
                sqlx::query_as(SQL.retrieve).bind(id).bind(address).fetch_optional(p).await?;
            Ok(row.map(|(trace, body)| Retrieved { trace, body }))
        }

        pub(crate) async fn retrieve_run(p: &Pool, address: &str, run: &Run) -> Result<Vec<(i64, Retrieved)>> {
            let rows: Vec<(i64, Vec<u8>, Vec<u8>)> = sqlx::query_as(SQL.retrieve_run)
                .bind(address)
                .bind(run.first)
                .bind(run.last)
                .bind(run.max_size)
                .bind(run.messages)
                .fetch_all(p)
                .await?;
            Ok(rows.into_iter().map(|(id, trace, body)| (id, Retrieved { trace, body })).collect())
        }

        pub(crate) async fn recount(p: &Pool, address: &str) -> Result<Usage> {
            let sizes: Vec<(i64,)> = sqlx::query_as(SQL.mail_sizes).bind(address).fetch_all(p).await?;
            let bytes = sizes.iter().fold(0i64, |a, s| a.saturating_add(s.0));
            Ok(Usage { bytes, messages: sizes.len() as i64 })
        }

        // --- users and passwords ---

        pub(crate) async fn user_password(p: &Pool, name: &str) -> Result<Option<User>> {
            let row: Option<(i64, String)> = sqlx::query_as(SQL.user_password).bind(name).fetch_optional(p).await?;
            Ok(row.map(|(id, passwd)| User { id, passwd }))
        }

        pub(crate) async fn set_user_password(p: &Pool, name: &str, hash: &str) -> Result<bool> {
            let mut tx = write(p).await?;
            let r = sqlx::query(SQL.set_user_password).bind(hash).bind(name).execute(&mut *tx).await;
            Ok(tx.finish(r).await?.rows_affected() > 0)
        }

        pub(crate) async fn box_owner(p: &Pool, address: &str) -> Result<Option<BoxOwner>> {
            let row: Option<(i64, String, String)> =
                sqlx::query_as(SQL.box_owner).bind(address).fetch_optional(p).await?;
            Ok(row.map(|(user_id, user_name, passwd)| BoxOwner { user_id, user_name, passwd }))
        }

        pub(crate) async fn replace_password(p: &Pool, user_id: i64, old: &str, new: &str) -> Result<bool> {
            let mut tx = write(p).await?;
            let r = sqlx::query(SQL.replace_password).bind(new).bind(user_id).bind(old).execute(&mut *tx).await;
            Ok(tx.finish(r).await?.rows_affected() > 0)
        }

        // --- administration (mmadmin) ---

        pub(crate) async fn admin_add_user(p: &Pool, name: &str, passwd: &str) -> Result<()> {
            let mut tx = write(p).await?;
            let r = sqlx::query(SQL.admin_add_user).bind(name).bind(passwd).execute(&mut *tx).await;
            tx.finish(r).await?;
            Ok(())
        }

        pub(crate) async fn admin_users(p: &Pool) -> Result<Vec<UserEntry>> {
            let rows: Vec<(i64, String, i64)> = sqlx::query_as(SQL.admin_users).fetch_all(p).await?;
            Ok(rows.into_iter().map(|(id, name, boxes)| UserEntry { id, name, boxes }).collect())
        }

        pub(crate) async fn admin_delete_user(p: &Pool, id: i64) -> Result<std::result::Result<(), OwnsBoxes>> {
            let mut tx = write(p).await?;
            let r = async {
                if crate::store::ops::exists!(&mut *tx, SQL.admin_user_has_box, id)? {
                    return Ok(Err(OwnsBoxes));
                }
                sqlx::query(SQL.admin_delete_user).bind(id).execute(&mut *tx).await?;
                Ok(Ok(()))
            }
            .await;
            Ok(tx.settle(r).await?)
        }

        pub(crate) async fn admin_add_box(
            p: &Pool,
            address: &str,
            user: i64,
            max_size: i64,
            max_mails: i64,
        ) -> Result<()> {
            let mut tx = write(p).await?;
            let r = sqlx::query(SQL.admin_add_box)
                .bind(address)
                .bind(user)
                .bind(max_size)
                .bind(max_mails)
                .execute(&mut *tx)
                .await;
            tx.finish(r).await?;
            Ok(())
        }

        pub(crate) async fn admin_box_limits(p: &Pool, address: &str, max_size: i64, max_mails: i64) -> Result<bool> {
            let mut tx = write(p).await?;
            let r =
                sqlx::query(SQL.admin_box_limits).bind(max_size).bind(max_mails).bind(address).execute(&mut *tx).await;
            Ok(tx.finish(r).await?.rows_affected() > 0)
        }

        pub(crate) async fn admin_boxes(p: &Pool) -> Result<Vec<BoxEntry>> {
            let rows: Vec<(String, Option<String>, i64, i64, i64, i64)> =
                sqlx::query_as(SQL.admin_boxes).fetch_all(p).await?;
            Ok(rows
                .into_iter()
                .map(|(address, owner, max_size, size, max_mails, mails)| BoxEntry {
                    address,
                    owner,
                    max_size,
                    size,
                    max_mails,
                    mails,
                })
                .collect())
        }

        pub(crate) async fn admin_delete_box(p: &Pool, address: &str) -> Result<bool> {
            let mut tx = write(p).await?;
            let r = async {
                let messages: Vec<(i64,)> =
                    sqlx::query_as(SQL.admin_box_messages).bind(address).fetch_all(&mut *tx).await?;
                sqlx::query(SQL.admin_delete_box_mail).bind(address).execute(&mut *tx).await?;
                sqlx::query(SQL.admin_delete_box_aliases).bind(address).execute(&mut *tx).await?;
                sqlx::query(SQL.admin_delete_box_lock).bind(address).execute(&mut *tx).await?;
                let gone = sqlx::query(SQL.admin_delete_box).bind(address).execute(&mut *tx).await?.rows_affected();
                let messages: Vec<i64> = messages.into_iter().map(|(m,)| m).collect();
                delete_orphans(&mut *tx, &messages).await?;
                Ok(gone > 0)
            }
            .await;
            Ok(tx.finish(r).await?)
        }

        pub(crate) async fn admin_add_alias(p: &Pool, pattern: &str, target: &str, user: i64) -> Result<()> {
            let mut tx = write(p).await?;
            let r = sqlx::query(SQL.admin_add_alias).bind(pattern).bind(target).bind(user).execute(&mut *tx).await;
            tx.finish(r).await?;
            Ok(())
        }

        pub(crate) async fn admin_delete_alias(p: &Pool, pattern: &str, target: Option<&str>) -> Result<u64> {
            let mut tx = write(p).await?;
            let r = match target {
                Some(t) => sqlx::query(SQL.admin_delete_alias_to).bind(pattern).bind(t).execute(&mut *tx).await,
                None => sqlx::query(SQL.admin_delete_alias).bind(pattern).execute(&mut *tx).await,
            };
            Ok(tx.finish(r).await?.rows_affected())
        }

        pub(crate) async fn admin_add_nofrom(p: &Pool, pattern: &str) -> Result<()> {
            let mut tx = write(p).await?;
            let r = sqlx::query(SQL.admin_add_nofrom).bind(pattern).execute(&mut *tx).await;
            tx.finish(r).await?;
            Ok(())
        }

        pub(crate) async fn admin_delete_nofrom(p: &Pool, pattern: &str) -> Result<u64> {
            let mut tx = write(p).await?;
            let r = sqlx::query(SQL.admin_delete_nofrom).bind(pattern).execute(&mut *tx).await;
            Ok(tx.finish(r).await?.rows_affected())
        }

        pub(crate) async fn admin_dangling_aliases(p: &Pool) -> Result<Vec<(String, String)>> {
            Ok(sqlx::query_as(SQL.admin_dangling_aliases).fetch_all(p).await?)
        }

        pub(crate) async fn admin_ownerless_boxes(p: &Pool) -> Result<Vec<String>> {
            let rows: Vec<(String,)> = sqlx::query_as(SQL.admin_ownerless_boxes).fetch_all(p).await?;
            Ok(rows.into_iter().map(|r| r.0).collect())
        }

        pub(crate) async fn admin_counter_drift(p: &Pool) -> Result<Vec<String>> {
            let rows: Vec<(String,)> = sqlx::query_as(SQL.admin_counter_drift).fetch_all(p).await?;
            Ok(rows.into_iter().map(|r| r.0).collect())
        }

        pub(crate) async fn admin_orphan_messages(p: &Pool) -> Result<i64> {
            let (n,): (i64,) = sqlx::query_as(SQL.admin_orphan_messages).fetch_one(p).await?;
            Ok(n)
        }

        pub(crate) async fn admin_stale_leases(p: &Pool, now: i64) -> Result<Vec<(String, String)>> {
            Ok(sqlx::query_as(SQL.admin_stale_leases).bind(now).fetch_all(p).await?)
        }

        pub(crate) async fn admin_repair(p: &Pool, boxes: &[String], now: i64) -> Result<Repaired> {
            let mut tx = write(p).await?;
            let r = async {
                for b in boxes {
                    sqlx::query(SQL.admin_recount_box).bind(b).execute(&mut *tx).await?;
                }
                let messages = sqlx::query(SQL.admin_delete_orphan_messages).execute(&mut *tx).await?.rows_affected();
                let leases =
                    sqlx::query(SQL.admin_delete_stale_leases).bind(now).execute(&mut *tx).await?.rows_affected();
                Ok(Repaired { counters: boxes.len(), messages, leases })
            }
            .await;
            Ok(tx.finish(r).await?)
        }

        // --- Greylisting ---

        pub(crate) async fn greylist(
            p: &Pool,
            key: &str,
            net: &str,
            now: i64,
            rule: crate::store::Greylisting,
        ) -> Result<i64> {
            let mut tx = write(p).await?;
            let r = async {
                let row: Option<(i64, i64, i64)> =
                    sqlx::query_as(SQL.grey_get).bind(key).fetch_optional(&mut *tx).await?;
                let (first, last, passed, wait) = crate::store::greylist_step(row, now, rule);
                match row {
                    None => {
                        sqlx::query(SQL.grey_insert).bind(key).bind(net).bind(now).bind(now).execute(&mut *tx).await?;
                    }
                    Some(_) => {
                        sqlx::query(SQL.grey_set)
                            .bind(first)
                            .bind(last)
                            .bind(passed)
                            .bind(key)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                Ok(wait)
            }
            .await;
            Ok(tx.finish(r).await?)
        }

        pub(crate) async fn greylist_purge(p: &Pool, before: i64) -> Result<u64> {
            let mut tx = write(p).await?;
            let r = sqlx::query(SQL.grey_purge).bind(before).execute(&mut *tx).await;
            Ok(tx.finish(r).await?.rows_affected())
        }

        // --- Bans ---

        pub(crate) async fn ban(p: &Pool, address: &str, until: i64, reason: &str) -> Result<()> {
            let mut tx = write(p).await?;
            let r = async {
                let done = sqlx::query(SQL.ban_extend)
                    .bind(until)
                    .bind(reason)
                    .bind(address)
                    .bind(until)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 && !crate::store::ops::exists!(&mut *tx, SQL.ban_exists, address)? {
                    sqlx::query(SQL.ban_insert).bind(address).bind(until).bind(reason).execute(&mut *tx).await?;
                }
                Ok(())
            }
            .await;
            tx.finish(r).await?;
            Ok(())
        }

        pub(crate) async fn active_bans(p: &Pool, now: i64) -> Result<Vec<(String, i64)>> {
            Ok(sqlx::query_as(SQL.ban_active).bind(now).fetch_all(p).await?)
        }

        pub(crate) async fn delete_ban(p: &Pool, address: &str) -> Result<u64> {
            let mut tx = write(p).await?;
            let r = sqlx::query(SQL.ban_delete).bind(address).execute(&mut *tx).await;
            Ok(tx.finish(r).await?.rows_affected())
        }

        pub(crate) async fn expire_bans(p: &Pool, now: i64) -> Result<()> {
            let mut tx = write(p).await?;
            let r = sqlx::query(SQL.ban_expire).bind(now).execute(&mut *tx).await;
            tx.finish(r).await?;
            Ok(())
        }

        // --- POP3 maildrop locks and deletions ---

        pub(crate) async fn lock_box(p: &Pool, address: &str, owner: &str, now: i64, expires: i64) -> Result<bool> {
            let mut tx = write(p).await?;
            let r = async {
                sqlx::query(SQL.lock_clear_expired).bind(address).bind(now).execute(&mut *tx).await?;
                let done =
                    sqlx::query(SQL.lock_insert).bind(address).bind(owner).bind(expires).execute(&mut *tx).await?;
                Ok(done.rows_affected() > 0)
            }
            .await;
            Ok(tx.finish(r).await?)
        }

        pub(crate) async fn refresh_lock(p: &Pool, address: &str, owner: &str, expires: i64) -> Result<bool> {
            let mut tx = write(p).await?;
            let r = sqlx::query(SQL.lock_refresh).bind(expires).bind(address).bind(owner).execute(&mut *tx).await;
            Ok(tx.finish(r).await?.rows_affected() > 0)
        }

        pub(crate) async fn unlock_box(p: &Pool, address: &str, owner: &str) -> Result<()> {
            let mut tx = write(p).await?;
            let r = sqlx::query(SQL.lock_release).bind(address).bind(owner).execute(&mut *tx).await;
            tx.finish(r).await?;
            Ok(())
        }

        /// The deletions of the POP3 QUITs in `quits`, in one transaction: for each, its
        /// lease checked and released, its copies deleted and its box settled; then the
        /// bodies no copy refers to any more, once for all. A QUIT whose lease is lost
        /// changes nothing (its answer is [`Update::LockLost`]) and the others go on.
        /// `turn_held`: the caller holds SQLite's writer turn already (a batch of
        /// `Store::commit_deletions`).
        pub(crate) async fn commit_deletions(
            p: &Pool,
            quits: &[Quit],
            now: i64,
            turn_held: bool,
        ) -> Result<Vec<Update>> {
            let mut tx = write_held(p, turn_held).await?;
            let r = async {
                // Box rows in one global order, as deliveries take them.
                let mut order: Vec<usize> = (0..quits.len()).collect();
                order.sort_by(|&a, &b| quits[a].address.cmp(&quits[b].address));
                let mut answers = vec![Update::LockLost; quits.len()];
                let mut bodies: Vec<i64> = Vec::new();
                for i in order {
                    let Quit { address, owner, ids } = &quits[i];
                    // The lease check and its release, in the transaction that deletes:
                    // the row stays locked by this transaction until it commits.
                    let held = sqlx::query(SQL.lock_release_live)
                        .bind(address)
                        .bind(owner)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    if held.rows_affected() == 0 {
                        continue;
                    }
                    // All copies in one statement on PostgreSQL; elsewhere ID_CHUNK copies
                    // per statement: a QUIT deleting thousands of messages is tens of
                    // round trips, not thousands. `(size, message)` of each deleted copy.
                    let mut deleted: Vec<(i64, i64)> = Vec::new();
                    if DIALECT == crate::store::sql::Dialect::Postgres {
                        if !ids.is_empty() {
                            deleted = sqlx::query_as(crate::store::sql::PG_DELETE_MAILS)
                                .bind(address)
                                .bind(crate::store::ops::pg_id_array(ids))
                                .fetch_all(&mut *tx)
                                .await?;
                        }
                    } else {
                        for chunk in crate::store::ops::id_chunks(ids) {
                            let found: Vec<(i64, i64, i64)> = chunk
                                .iter()
                                .fold(sqlx::query_as(SQL.mails_for_delete), |q, id| q.bind(*id))
                                .bind(address)
                                .fetch_all(&mut *tx)
                                .await?;
                            if found.is_empty() {
                                continue;
                            }
                            chunk
                                .iter()
                                .fold(sqlx::query(SQL.delete_mails), |q, id| q.bind(*id))
                                .bind(address)
                                .execute(&mut *tx)
                                .await?;
                            deleted.extend(found.into_iter().map(|(_, size, message)| (size, message)));
                        }
                    }
                    let bytes = deleted.iter().fold(0i64, |b, (size, _)| b.saturating_add(*size));
                    let count = deleted.len() as i64;
                    bodies.extend(deleted.into_iter().map(|(_, message)| message));
                    sqlx::query(SQL.settle_box).bind(bytes).bind(count).bind(address).execute(&mut *tx).await?;
                    answers[i] = Update::Deleted(count as u64);
                }
                bodies.sort_unstable();
                bodies.dedup();
                delete_orphans(&mut *tx, &bodies).await?;
                Ok(answers)
            }
            .await;
            Ok(tx.finish(r).await?)
        }

        pub(crate) async fn mail_present(p: &Pool, address: &str, ids: &[i64]) -> Result<bool> {
            for chunk in crate::store::ops::id_chunks(ids) {
                let q = chunk.iter().fold(sqlx::query(SQL.mails_for_delete), |q, id| q.bind(*id)).bind(address);
                if q.fetch_optional(p).await?.is_some() {
                    return Ok(true);
                }
            }
            Ok(false)
        }

        // --- TMTP accounts, nodes, aliases, groups ---

        pub(crate) async fn register(p: &Pool, uid: &str, hash: &str, now: i64, auth: Option<&str>) -> Result<()> {
            let mut tx = write(p).await?;
            let r = async {
                sqlx::query(SQL.insert_user).bind(uid).bind(now).bind(auth).execute(&mut *tx).await?;
                sqlx::query(SQL.insert_node).bind(uid).bind(1i64).bind(hash).execute(&mut *tx).await?;
                Ok(())
            }
            .await;
            Ok(tx.finish(r).await?)
        }

        pub(crate) async fn node_by_hash(p: &Pool, hash: &str) -> Result<Option<Node>> {
            let row: Option<(String, i64)> = sqlx::query_as(SQL.node_by_hash).bind(hash).fetch_optional(p).await?;
            Ok(row.map(|(uid, num)| Node { uid, num }))
        }

        pub(crate) async fn user_exists(p: &Pool, uid: &str) -> Result<bool> {
            Ok(crate::store::ops::exists!(p, SQL.user_exists, uid)?)
        }

        pub(crate) async fn users_among(p: &Pool, uids: &[&str]) -> Result<std::collections::HashSet<String>> {
            let mut found = std::collections::HashSet::new();
            for chunk in crate::store::ops::padded::<_, { crate::store::sql::ID_CHUNK }>(uids) {
                let rows: Vec<(String,)> =
                    chunk.iter().fold(sqlx::query_as(SQL.users_among), |q, uid| q.bind(*uid)).fetch_all(p).await?;
                found.extend(rows.into_iter().map(|r| r.0));
            }
            Ok(found)
        }

        pub(crate) async fn users_nodes(
            p: &Pool,
            uids: &[&str],
        ) -> Result<std::collections::HashMap<String, Vec<i64>>> {
            let mut found: std::collections::HashMap<String, Vec<i64>> = std::collections::HashMap::new();
            for chunk in crate::store::ops::padded::<_, { crate::store::sql::ID_CHUNK }>(uids) {
                let rows: Vec<(String, Option<i64>)> =
                    chunk.iter().fold(sqlx::query_as(SQL.users_nodes), |q, uid| q.bind(*uid)).fetch_all(p).await?;
                for (uid, num) in rows {
                    let nums = found.entry(uid).or_default();
                    if let Some(num) = num.filter(|n| !nums.contains(n)) {
                        nums.push(num);
                    }
                }
            }
            Ok(found)
        }

        pub(crate) async fn add_node(p: &Pool, uid: &str, hash: &str, from_num: i64, max: i64) -> Result<AddNode> {
            let mut tx = write(p).await?;
            let r = async {
                let (live, top): (i64, Option<i64>) =
                    sqlx::query_as(SQL.node_counts).bind(uid).fetch_one(&mut *tx).await?;
                if live >= max {
                    return Ok(Err(AddNode::TooMany));
                }
                let num = top.unwrap_or(0) + 1;
                sqlx::query(SQL.insert_node).bind(uid).bind(num).bind(hash).execute(&mut *tx).await?;
                sqlx::query(SQL.copy_queue).bind(uid).bind(num).bind(uid).bind(from_num).execute(&mut *tx).await?;
                Ok(Ok(AddNode::Added(num)))
            }
            .await;
            Ok(tx.settle(r).await?.unwrap_or_else(|refused| refused))
        }

        pub(crate) async fn alias_owner(p: &Pool, alias: &str) -> Result<Option<String>> {
            let row: Option<(String,)> = sqlx::query_as(SQL.alias_owner).bind(alias).fetch_optional(p).await?;
            Ok(row.map(|r| r.0))
        }

        pub(crate) async fn add_alias(p: &Pool, uid: &str, alias: &str) -> Result<AddAlias> {
            let mut tx = write(p).await?;
            let r = async {
                let owner: Option<(String,)> =
                    sqlx::query_as(SQL.alias_owner).bind(alias).fetch_optional(&mut *tx).await?;
                match owner {
                    Some((o,)) if o == uid => return Ok(Err(AddAlias::Added)),
                    Some(_) => return Ok(Err(AddAlias::Taken)),
                    None => {}
                }
                if crate::store::ops::exists!(&mut *tx, SQL.group_exists, alias)? {
                    return Ok(Err(AddAlias::NotAvailable));
                }
                sqlx::query(SQL.insert_alias).bind(alias).bind(uid).execute(&mut *tx).await?;
                Ok(Ok(AddAlias::Added))
            }
            .await;
            match tx.settle(r).await.map_err(sqlx::Error::from) {
                Ok(done) => Ok(done.unwrap_or_else(|nothing_to_do| nothing_to_do)),
                // Taken by a concurrent request between the check and the insert.
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(AddAlias::Taken),
                Err(e) => Err(e.into()),
            }
        }

        pub(crate) async fn group_exists(p: &Pool, gid: &str) -> Result<bool> {
            Ok(crate::store::ops::exists!(p, SQL.group_exists, gid)?)
        }

        pub(crate) async fn members(p: &Pool, gid: &str) -> Result<Vec<Member>> {
            let rows: Vec<(String, String, i64)> = sqlx::query_as(SQL.members).bind(gid).fetch_all(p).await?;
            Ok(rows
                .into_iter()
                .map(|(uid, alias, status)| Member { uid, alias, status: MemberStatus::from_code(status) })
                .collect())
        }

        pub(crate) async fn group_nodes(p: &Pool, gid: &str) -> Result<Vec<Node>> {
            let rows: Vec<(String, i64)> = sqlx::query_as(SQL.group_nodes).bind(gid).fetch_all(p).await?;
            Ok(rows.into_iter().map(|(uid, num)| Node { uid, num }).collect())
        }

        pub(crate) async fn set_members(p: &Pool, gid: &str, members: &[Member]) -> Result<()> {
            let mut tx = write(p).await?;
            let r = async {
                for m in members {
                    sqlx::query(SQL.delete_member).bind(gid).bind(&m.uid).execute(&mut *tx).await?;
                    sqlx::query(SQL.insert_member)
                        .bind(gid)
                        .bind(&m.uid)
                        .bind(&m.alias)
                        .bind(m.status.code())
                        .execute(&mut *tx)
                        .await?;
                }
                Ok(())
            }
            .await;
            Ok(tx.finish(r).await?)
        }

        // --- TMTP messages and queues ---

        /// Work rows for recipients of message `id` connected to other instances than
        /// `me`, in the transaction that queues it; whether there were any.
        async fn wake_remote(
            conn: &mut <$db as sqlx::Database>::Connection,
            id: i64,
            me: &str,
            now: i64,
        ) -> std::result::Result<bool, sqlx::Error> {
            let remote: Vec<(String, String, i64)> =
                sqlx::query_as(SQL.link_remote_recipients).bind(id).bind(me).bind(now).fetch_all(&mut *conn).await?;
            for (instance, uid, num) in &remote {
                sqlx::query(SQL.wake_insert)
                    .bind(instance)
                    .bind(uid)
                    .bind(num)
                    .bind(None::<Vec<u8>>)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
            }
            if !remote.is_empty() && DIALECT == crate::store::sql::Dialect::Postgres {
                sqlx::query(SQL.wake_notify).execute(&mut *conn).await?;
            }
            Ok(!remote.is_empty())
        }

        /// TMTP writes in one transaction, in order (see [`TmtpOp`]); then the messages
        /// acked by their last recipient, and those made ready for no node, are deleted.
        /// Returns, for each op, the queue rows its acks removed (0 for the others). On
        /// SQLite a whole message of up to [`ROW_CHUNK`](crate::store::sql::ROW_CHUNK)
        /// recipients is one call
        /// ([`SQLITE_STORE_WHOLE`](crate::store::sql::SQLITE_STORE_WHOLE)). `turn_held`:
        /// the caller holds the writer turn (SQLite), a group commit's
        /// (`Store::tmtp_store_messages`).
        pub(crate) async fn write_tmtp(p: &Pool, ops: &[TmtpOp<'_>], now: i64, turn_held: bool) -> Result<Vec<u64>> {
            let mut tx = write_held(p, turn_held).await?;
            let r = async {
                let mut done = Vec::with_capacity(ops.len());
                let mut gone: Vec<i64> = Vec::new();
                for op in ops {
                    done.push(match *op {
                        TmtpOp::Whole(m, remote) => {
                            insert_whole(&mut *tx, &m, remote, now).await?;
                            0
                        }
                        TmtpOp::Begin(id) => {
                            sqlx::query(SQL.begin_message).bind(id).bind(now).execute(&mut *tx).await?;
                            0
                        }
                        TmtpOp::Chunk { id, seq, data } => {
                            sqlx::query(SQL.insert_chunk).bind(id).bind(seq).bind(data).execute(&mut *tx).await?;
                            0
                        }
                        TmtpOp::Ready { id, header, size, prio, nodes, remote } => {
                            sqlx::query(SQL.ready_message).bind(header).bind(size).bind(id).execute(&mut *tx).await?;
                            enqueue(&mut *tx, nodes, prio, id).await?;
                            if let Some(me) = remote {
                                wake_remote(&mut *tx, id, me, now).await?;
                            }
                            if nodes.is_empty() {
                                gone.push(id);
                            }
                            0
                        }
                        TmtpOp::Acks(acks) => {
                            gone.extend(acks.iter().map(|(_, id)| *id));
                            dequeue(&mut *tx, acks).await?
                        }
                    });
                }
                gone.sort_unstable();
                gone.dedup();
                delete_unqueued(&mut *tx, &gone).await?;
                Ok(done)
            }
            .await;
            Ok(tx.finish(r).await?)
        }

        /// Stores message `m` that came whole, with its chunk and its queue rows, and work
        /// rows for recipients on other instances than `remote` when given.
        async fn insert_whole(
            conn: &mut <$db as sqlx::Database>::Connection,
            m: &WholeMessage<'_>,
            remote: Option<&str>,
            now: i64,
        ) -> std::result::Result<(), sqlx::Error> {
            use crate::store::sql::{Dialect, ROW_CHUNK, SQLITE_STORE_WHOLE};
            if m.nodes.is_empty() {
                return Ok(());
            }
            let size = m.data.len() as i64;
            if DIALECT == Dialect::Sqlite {
                // One call to the connection's thread for the message, its chunk and its
                // first queue rows.
                let first: Vec<&Node> = m.nodes.iter().take(ROW_CHUNK).collect();
                if let Some(rows) = crate::store::ops::padded::<_, ROW_CHUNK>(&first).next() {
                    rows.iter()
                        .fold(sqlx::query(SQLITE_STORE_WHOLE), |q, n| {
                            q.bind(&n.uid).bind(n.num).bind(m.prio).bind(m.id)
                        })
                        .bind(m.id)
                        .bind(m.header)
                        .bind(size)
                        .bind(now)
                        .bind(m.data)
                        .execute(&mut *conn)
                        .await?;
                }
                enqueue(&mut *conn, &m.nodes[first.len()..], m.prio, m.id).await?;
            } else {
                sqlx::query(SQL.insert_ready_message)
                    .bind(m.id)
                    .bind(m.header)
                    .bind(size)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                if !m.data.is_empty() {
                    sqlx::query(SQL.insert_chunk).bind(m.id).bind(0_i64).bind(m.data).execute(&mut *conn).await?;
                }
                enqueue(&mut *conn, m.nodes, m.prio, m.id).await?;
            }
            if let Some(me) = remote {
                wake_remote(&mut *conn, m.id, me, now).await?;
            }
            Ok(())
        }

        /// Queues message `id` with priority `prio` for `nodes`,
        /// [`ROW_CHUNK`](crate::store::sql::ROW_CHUNK) rows per statement.
        async fn enqueue(
            conn: &mut <$db as sqlx::Database>::Connection,
            nodes: &[Node],
            prio: &str,
            id: i64,
        ) -> std::result::Result<(), sqlx::Error> {
            let nodes: Vec<&Node> = nodes.iter().collect();
            for chunk in crate::store::ops::padded::<_, { crate::store::sql::ROW_CHUNK }>(&nodes) {
                chunk
                    .iter()
                    .fold(sqlx::query(SQL.enqueue_rows), |q, n| q.bind(&n.uid).bind(n.num).bind(prio).bind(id))
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        }

        /// Deletes the messages among `ids` that no queue row refers to, with their
        /// chunks.
        async fn delete_unqueued(
            conn: &mut <$db as sqlx::Database>::Connection,
            ids: &[i64],
        ) -> std::result::Result<(), sqlx::Error> {
            use crate::store::sql::{PG_DELETE_CHUNKS, PG_DELETE_UNQUEUED};
            over_ids(conn, &[(SQL.delete_unqueued, PG_DELETE_UNQUEUED), (SQL.delete_chunks, PG_DELETE_CHUNKS)], ids)
                .await
        }

        pub(crate) async fn discard(p: &Pool, id: i64) -> Result<()> {
            let mut tx = write(p).await?;
            let r = delete_unqueued(&mut *tx, &[id]).await;
            Ok(tx.finish(r).await?)
        }

        pub(crate) async fn queue(p: &Pool, uid: &str, num: i64) -> Result<Vec<Queued>> {
            let rows: Vec<(String, i64)> = sqlx::query_as(SQL.queue).bind(uid).bind(num).fetch_all(p).await?;
            Ok(rows.into_iter().map(|(prio, message)| Queued { prio, message }).collect())
        }

        pub(crate) async fn queue_page(
            p: &Pool,
            uid: &str,
            num: i64,
            after: Option<&Queued>,
            limit: i64,
        ) -> Result<Vec<Queued>> {
            let rows: Vec<(String, i64)> = match after {
                None => sqlx::query_as(SQL.queue_page).bind(uid).bind(num).bind(limit).fetch_all(p).await?,
                Some(a) => {
                    sqlx::query_as(SQL.queue_page_after)
                        .bind(uid)
                        .bind(num)
                        .bind(&a.prio)
                        .bind(&a.prio)
                        .bind(a.message)
                        .bind(limit)
                        .fetch_all(p)
                        .await?
                }
            };
            Ok(rows.into_iter().map(|(prio, message)| Queued { prio, message }).collect())
        }

        pub(crate) async fn message(p: &Pool, id: i64) -> Result<Option<(Vec<u8>, i64)>> {
            Ok(sqlx::query_as(SQL.message).bind(id).fetch_optional(p).await?)
        }

        pub(crate) async fn message_start(p: &Pool, id: i64) -> Result<Option<TmtpMessage>> {
            let row: Option<(Vec<u8>, i64, Option<Vec<u8>>)> =
                sqlx::query_as(SQL.message_start).bind(id).fetch_optional(p).await?;
            Ok(row.map(|(header, size, first)| TmtpMessage { header, size, first }))
        }

        pub(crate) async fn chunks(p: &Pool, id: i64, from: i64, limit: i64) -> Result<Vec<(i64, Vec<u8>)>> {
            Ok(sqlx::query_as(SQL.chunks).bind(id).bind(from).bind(limit).fetch_all(p).await?)
        }

        /// Deletes the queue rows of `acks` (node, message id): all in one statement on
        /// PostgreSQL, [`ROW_CHUNK`](crate::store::sql::ROW_CHUNK) per statement
        /// elsewhere, so a batch of hundreds is a few round trips. How many went.
        async fn dequeue(
            conn: &mut <$db as sqlx::Database>::Connection,
            acks: &[(Node, i64)],
        ) -> std::result::Result<u64, sqlx::Error> {
            let mut dequeued = 0;
            if acks.is_empty() {
                return Ok(0);
            }
            if DIALECT == crate::store::sql::Dialect::Postgres {
                let uids = crate::store::ops::pg_text_array(acks.iter().map(|(n, _)| n.uid.as_str()));
                let nums: Vec<i64> = acks.iter().map(|(n, _)| n.num).collect();
                let ids: Vec<i64> = acks.iter().map(|(_, id)| *id).collect();
                let done = sqlx::query(crate::store::sql::PG_DEQUEUE_ACKS)
                    .bind(uids)
                    .bind(crate::store::ops::pg_id_array(&nums))
                    .bind(crate::store::ops::pg_id_array(&ids))
                    .execute(&mut *conn)
                    .await?;
                dequeued = done.rows_affected();
            } else {
                let rows: Vec<&(Node, i64)> = acks.iter().collect();
                for chunk in crate::store::ops::padded::<_, { crate::store::sql::ROW_CHUNK }>(&rows) {
                    let done = chunk
                        .iter()
                        .fold(sqlx::query(SQL.dequeue_acks), |q, (n, id)| q.bind(&n.uid).bind(n.num).bind(*id))
                        .execute(&mut *conn)
                        .await?;
                    dequeued += done.rows_affected();
                }
            }
            Ok(dequeued)
        }

        pub(crate) async fn cleanup(p: &Pool) -> Result<u64> {
            let mut tx = write(p).await?;
            let r = async {
                let n = sqlx::query(SQL.delete_unready).execute(&mut *tx).await?.rows_affected();
                sqlx::query(SQL.delete_stray_chunks).execute(&mut *tx).await?;
                Ok(n)
            }
            .await;
            Ok(tx.finish(r).await?)
        }

        pub(crate) async fn link_take(
            p: &Pool,
            node: &Node,
            instance: &str,
            token: i64,
            now: i64,
            expires: i64,
        ) -> Result<bool> {
            let mut tx = write(p).await?;
            let r = async {
                sqlx::query(SQL.link_clear)
                    .bind(&node.uid)
                    .bind(node.num)
                    .bind(now)
                    .bind(instance)
                    .execute(&mut *tx)
                    .await?;
                let done = sqlx::query(SQL.link_insert)
                    .bind(&node.uid)
                    .bind(node.num)
                    .bind(instance)
                    .bind(token)
                    .bind(expires)
                    .execute(&mut *tx)
                    .await?;
                Ok(done.rows_affected() > 0)
            }
            .await;
            Ok(tx.finish(r).await?)
        }

        pub(crate) async fn link_release(p: &Pool, node: &Node, instance: &str, token: i64) -> Result<()> {
            let mut tx = write(p).await?;
            let r = sqlx::query(SQL.link_release)
                .bind(&node.uid)
                .bind(node.num)
                .bind(instance)
                .bind(token)
                .execute(&mut *tx)
                .await;
            tx.finish(r).await?;
            Ok(())
        }

        pub(crate) async fn link_renew(p: &Pool, instance: &str, expires: i64, expire_work: i64) -> Result<u64> {
            let mut tx = write(p).await?;
            let r = async {
                let n =
                    sqlx::query(SQL.link_renew).bind(expires).bind(instance).execute(&mut *tx).await?.rows_affected();
                sqlx::query(SQL.wake_expire).bind(expire_work).execute(&mut *tx).await?;
                Ok(n)
            }
            .await;
            Ok(tx.finish(r).await?)
        }

        pub(crate) async fn link_others(p: &Pool, me: &str, now: i64) -> Result<bool> {
            Ok(crate::store::ops::exists!(p, SQL.link_others, me, now)?)
        }

        pub(crate) async fn wake_uid(p: &Pool, uid: &str, me: &str, frame: &[u8], now: i64) -> Result<bool> {
            // Read first: most notes have no node elsewhere, and need no write at all.
            let elsewhere: Vec<(String,)> =
                sqlx::query_as(SQL.link_remote_instances).bind(uid).bind(me).bind(now).fetch_all(p).await?;
            if elsewhere.is_empty() {
                return Ok(false);
            }
            let mut tx = write(p).await?;
            let r = async {
                let instances: Vec<(String,)> =
                    sqlx::query_as(SQL.link_remote_instances).bind(uid).bind(me).bind(now).fetch_all(&mut *tx).await?;
                for (instance,) in &instances {
                    sqlx::query(SQL.wake_insert)
                        .bind(instance)
                        .bind(uid)
                        .bind(0_i64)
                        .bind(frame)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                if !instances.is_empty() && DIALECT == crate::store::sql::Dialect::Postgres {
                    sqlx::query(SQL.wake_notify).execute(&mut *tx).await?;
                }
                Ok(!instances.is_empty())
            }
            .await;
            Ok(tx.finish(r).await?)
        }

        pub(crate) async fn wakes(p: &Pool, me: &str, limit: i64) -> Result<Vec<crate::store::model::Wake>> {
            let mut tx = write(p).await?;
            let r = async {
                let rows: Vec<(i64, String, i64, Option<Vec<u8>>)> =
                    sqlx::query_as(SQL.wake_read).bind(me).bind(limit).fetch_all(&mut *tx).await?;
                if let Some(last) = rows.last() {
                    sqlx::query(SQL.wake_delete).bind(me).bind(last.0).execute(&mut *tx).await?;
                }
                Ok(rows
                    .into_iter()
                    .map(|(_, uid, num, frame)| crate::store::model::Wake { node: Node { uid, num }, frame })
                    .collect())
            }
            .await;
            Ok(tx.finish(r).await?)
        }

        pub(crate) async fn take_ids(p: &Pool, floor: i64, size: i64) -> Result<i64> {
            let mut tx = write(p).await?;
            let r = async {
                sqlx::query(SQL.idblock_take).bind(floor).bind(floor).bind(size).execute(&mut *tx).await?;
                let (end,): (i64,) = sqlx::query_as(SQL.idblock_end).fetch_one(&mut *tx).await?;
                Ok(end)
            }
            .await;
            Ok(tx.finish(r).await?)
        }

        pub(crate) async fn max_message_id(p: &Pool) -> Result<i64> {
            let row: (Option<i64>,) = sqlx::query_as(SQL.max_message_id).fetch_one(p).await?;
            Ok(row.0.unwrap_or(0))
        }
    };
}

pub(crate) use {exists, message_id, operations};

/// Whether `e` is a unique, foreign key or check constraint violation.
pub(crate) fn broke_constraint(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.is_unique_violation() || d.is_foreign_key_violation() || d.is_check_violation(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pg_id_array_is_a_bigint_array_literal() {
        assert_eq!(super::pg_id_array(&[]), "{}");
        assert_eq!(super::pg_id_array(&[7]), "{7}");
        assert_eq!(super::pg_id_array(&[1, -2, i64::MAX]), "{1,-2,9223372036854775807}");
    }

    #[test]
    fn pg_text_array_quotes_every_element() {
        assert_eq!(super::pg_text_array([]), "{}");
        assert_eq!(super::pg_text_array(["a", "NULL", "", "b,c"]), r#"{"a","NULL","","b,c"}"#);
        assert_eq!(super::pg_text_array([r#"x"y\z{}"#]), r#"{"x\"y\\z{}"}"#);
    }
}
