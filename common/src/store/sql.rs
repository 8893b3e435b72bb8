//! Every SQL statement of the store, written once (style.md P6).
//!
//! A statement is written in PostgreSQL's form: `$1`, `$2`, … for parameters and
//! `"user"` for the table whose name is a reserved word. [`Sql::new`] renders it for a
//! [`Dialect`] once, at first use: `?` for MySQL/MariaDB (whose placeholders are bound in
//! the order they appear, so there a statement must use `$1`, `$2`, … in order and each
//! once; a test checks it), `?1`, `?2`, … for SQLite, and `` `user` `` for MySQL. Only the
//! statements whose dialects really differ are written per dialect ([`Text::Per`]).
//!
//! `/*index NAME*/` after a table names the secondary index a lookup must use: MySQL and
//! MariaDB get `FORCE INDEX (NAME)` there, the others nothing. MariaDB 10.11 was seen to
//! plan the `NOT EXISTS` lookup of a QUIT's orphaned bodies as a scan of the whole `mail`
//! table for every body, estimating one row, on a table emptied and filled again
//! seconds before (its slow log; issue 16): 7–10 ms per chunk of 32 instead of under
//! 1 ms, and a QUIT of 2000 messages twice as slow. PostgreSQL and SQLite choose the
//! index on their own.

/// The three SQL dialects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
    /// SQLite.
    Sqlite,
}

/// A statement's text.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Text {
    /// The same statement on every backend.
    Same(&'static str),
    /// Written for each dialect.
    Per {
        /// PostgreSQL.
        postgres: &'static str,
        /// MySQL or MariaDB.
        mysql: &'static str,
        /// SQLite.
        sqlite: &'static str,
    },
}

use Text::{Per, Same};

/// Where a statement names the index of a lookup (see the module notes).
const INDEX_HINT: &str = "/*index ";

/// `text` for `dialect` (see the module notes); made once per statement and dialect and
/// kept for the life of the process.
fn render(dialect: Dialect, text: Text) -> &'static str {
    let text = match (text, dialect) {
        (Same(t), _) => t,
        (Per { postgres, .. }, Dialect::Postgres) => postgres,
        (Per { mysql, .. }, Dialect::MySql) => mysql,
        (Per { sqlite, .. }, Dialect::Sqlite) => sqlite,
    };
    let mut out = String::with_capacity(text.len() + 8);
    let mut rest = text;
    while let Some(i) = rest.find(['$', '"', '/']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(hint) = rest.strip_prefix(INDEX_HINT) {
            let (index, after) = hint.split_once("*/").expect("an index hint ends with */");
            if dialect == Dialect::MySql {
                out.push_str("FORCE INDEX (");
                out.push_str(index);
                out.push(')');
            } else {
                // The space before the hint stays; the one after it goes.
                if out.ends_with(' ') {
                    out.pop();
                }
            }
            rest = after;
            continue;
        }
        if let Some(slash) = rest.strip_prefix('/') {
            out.push('/');
            rest = slash;
            continue;
        }
        if let Some(quoted) = rest.strip_prefix("\"user\"") {
            out.push_str(if dialect == Dialect::MySql { "`user`" } else { "\"user\"" });
            rest = quoted;
            continue;
        }
        let digits = rest[1..].find(|c: char| !c.is_ascii_digit()).map_or(rest.len() - 1, |n| n);
        let (placeholder, after) = rest.split_at(1 + digits);
        match dialect {
            _ if digits == 0 => out.push_str(&placeholder[..1]),
            Dialect::Postgres => out.push_str(placeholder),
            Dialect::MySql => out.push('?'),
            Dialect::Sqlite => {
                out.push('?');
                out.push_str(&placeholder[1..]);
            }
        }
        rest = after;
    }
    out.push_str(rest);
    Box::leak(out.into_boxed_str())
}

/// The condition under which a box takes one more message: under both of its limits
/// (0 = none). The one text of that rule for [`Sql::take_room`], [`PG_DELIVER_ONE`] and
/// [`SQLITE_DELIVER_ONE`] (and migration 0009's procedure, which must say the same).
macro_rules! box_has_room {
    () => {
        "(box_max_mails = 0 OR box_mails < box_max_mails) AND (box_max_size = 0 OR box_size < box_max_size)"
    };
}

/// [`Sql::take_room`]: adds one message of `$1` bytes to box `$2` if it has room.
macro_rules! take_room {
    () => {
        concat!(
            "UPDATE box SET box_size = box_size + $1, box_mails = box_mails + 1, box_in = CURRENT_TIMESTAMP \
             WHERE box_address = $2 AND ",
            box_has_room!()
        )
    };
}

/// The largest body (bytes) delivered by [`PG_DELIVER_ONE`]. A larger one is written
/// first, in a transaction, and the box row taken after it: in the one statement the
/// row is held while the body is written, which costs more than the round trips saved
/// once bodies are large. Into one box from 20 sessions (release build, 2026-12-02,
/// medians of 3 rounds, messages/s, transaction -> one statement): 4 KiB 1064 -> 1508,
/// 8 KiB 1029 -> 1414, 16 KiB 1076 -> 1350, 32 KiB 1001 -> 946, 100 KiB 765 -> 676.
pub(crate) const PG_DELIVER_ONE_MAX: usize = 16 * 1024;

/// PostgreSQL only: a whole delivery of one copy in one statement, committed on its own
/// (data-modifying `WITH` queries, which MySQL and SQLite do not have). `$1` copy size
/// (body and trace, bytes), `$2` box, `$3` body size (bytes), `$4` time (Unix seconds),
/// `$5` body, `$6` uid, `$7` trace. The box row is taken as [`Sql::take_room`] takes it;
/// the body and the copy are inserted only if it was, so a full box stores nothing and
/// the statement inserts no row and returns none; a stored copy returns one row. One
/// round trip instead of five (`BEGIN`, body, box, copy, `COMMIT`), and the box row is
/// held for no round trip at all.
pub(crate) const PG_DELIVER_ONE: &str = concat!(
    "WITH input AS (SELECT $1::bigint AS size, $2::varchar AS box, $3::bigint AS body_size, \
     $4::bigint AS created, $5::bytea AS data, $6::varchar AS uid, $7::bytea AS trace), \
     room AS (UPDATE box SET box_size = box_size + input.size, box_mails = box_mails + 1, box_in = CURRENT_TIMESTAMP \
     FROM input WHERE box_address = input.box AND ",
    box_has_room!(),
    " RETURNING box_address), \
     body AS (INSERT INTO message (message_size, message_created, message_data) \
     SELECT body_size, created, data FROM input, room RETURNING message_id) \
     INSERT INTO mail (mail_uid, mail_box, mail_message, mail_size, mail_created, mail_trace) \
     SELECT uid, box, message_id, size, created, trace FROM input, body RETURNING 1"
);

/// SQLite only: a delivery of one copy in one call to the connection's worker thread,
/// inside the caller's transaction. sqlx runs a SQLite connection on a thread of its own
/// and hands each statement over to it and its answer back: two thread switches per
/// statement, which for a small message cost more than SQLite's own work (BENCHMARKS.md).
/// These three statements go over as one. Parameters as [`PG_DELIVER_ONE`]'s.
/// The box row is taken as [`Sql::take_room`] takes it; the body is inserted only if
/// that changed a row (`changes()`, the rows of the statement completed last), and the
/// copy only if the body was (its id is `last_insert_rowid()`), so a full box changes
/// nothing and returns no row; a stored copy returns one row.
pub(crate) const SQLITE_DELIVER_ONE: &str = concat!(
    take_room!(),
    "; INSERT INTO message (message_size, message_created, message_data) SELECT $3, $4, $5 WHERE changes() = 1; \
     INSERT INTO mail (mail_uid, mail_box, mail_message, mail_size, mail_created, mail_trace) \
     SELECT $6, $2, last_insert_rowid(), $1, $4, $7 WHERE changes() = 1 RETURNING 1"
);

/// The most deliveries one [`sqlite_deliver_many`] text stores.
pub(crate) const SQLITE_DELIVER_MANY_MAX: usize = 16;

/// SQLite only: `n` deliveries of one copy each in one call to the connection's thread,
/// for a group commit (`n` is 1, 2, 4, 8 or [`SQLITE_DELIVER_MANY_MAX`]): the statements
/// of [`SQLITE_DELIVER_ONE`] `n` times, each `$N` written as an anonymous `?`, the `k`-th
/// delivery's returning one row holding `k` when its copy was stored. Each delivery binds
/// its parameters in the order [`sqlite_deliver_order`] gives. (Anonymous, because sqlx
/// numbers the nameless slots of every statement after the first from where the one
/// before stopped, and stops binding at the first beyond the arguments: a statement
/// naming `?8` to `?14` would get nothing.)
///
/// sqlx hands every call to the connection's thread and its answer back to the task: in
/// a batch of 100 KiB deliveries those hand-offs, one per delivery, held the writer turn
/// longer than SQLite's own work did. The five texts are made at first use; each
/// connection prepares them once.
///
/// # Panics
/// If `n` is not one of those sizes (a programming error).
pub(crate) fn sqlite_deliver_many(n: usize) -> &'static str {
    static TEXTS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        let (one, _) = sqlite_deliver_anonymous();
        (0..=SQLITE_DELIVER_MANY_MAX.trailing_zeros())
            .map(|b| (0..1usize << b).map(|k| format!("{one}RETURNING {k}; ")).collect())
            .collect()
    });
    assert!(n.is_power_of_two() && n <= SQLITE_DELIVER_MANY_MAX, "no text for {n} deliveries");
    &TEXTS[n.trailing_zeros() as usize]
}

/// The parameters of one delivery of [`sqlite_deliver_many`] in the order its text names
/// them, as [`PG_DELIVER_ONE`] numbers them (1 copy size, 2 box, …, 7 trace).
pub(crate) fn sqlite_deliver_order() -> &'static [usize] {
    static ORDER: std::sync::LazyLock<Vec<usize>> = std::sync::LazyLock::new(|| sqlite_deliver_anonymous().1);
    &ORDER
}

/// [`SQLITE_DELIVER_ONE`] without its `RETURNING 1`, each `$N` written `?`, and the `N`s
/// in the order they appear.
fn sqlite_deliver_anonymous() -> (String, Vec<usize>) {
    let mut rest = SQLITE_DELIVER_ONE.strip_suffix("RETURNING 1").expect("SQLITE_DELIVER_ONE returns 1");
    let (mut text, mut order) = (String::new(), Vec::new());
    while let Some(i) = rest.find('$') {
        text.push_str(&rest[..i]);
        text.push('?');
        let digits = rest[i + 1..].find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len() - i - 1);
        order.push(rest[i + 1..i + 1 + digits].parse().expect("a numbered parameter"));
        rest = &rest[i + 1 + digits..];
    }
    text.push_str(rest);
    (text, order)
}

/// MySQL/MariaDB only: a whole delivery of one copy in one round trip, the procedure of
/// migration 0009 (MySQL has no data-modifying `WITH`). Parameters as
/// [`PG_DELIVER_ONE`]'s; it returns one row when the copy was stored, none when the box
/// was full. The body is written before the box row is taken, in the procedure's own
/// transaction, so it takes bodies of any size.
pub(crate) const MYSQL_DELIVER_ONE: &str = "CALL mmmail_deliver_one(?, ?, ?, ?, ?, ?, ?)";

/// PostgreSQL only: deletes the copies of box `$1` among the ids of `$2`, a bigint array
/// literal (`{1,2,3}`, see [`pg_id_array`](crate::store::ops::pg_id_array)), and returns
/// `(size, message)` of each deleted copy: a POP3 QUIT's deletions in one statement
/// whatever their number, where the other backends select and delete [`ID_CHUNK`] ids
/// at a time ([`Sql::mails_for_delete`], [`Sql::delete_mails`]). 2000 copies: 1 round
/// trip instead of 32. The ids are joined as a set (`IN (SELECT unnest(…))`), so that
/// each is found through the primary key: written as `mail_id = ANY(…)` beside
/// `mail_box = $1`, PostgreSQL chose to walk the box's index and test every copy
/// against the whole array (2000 copies: 150 ms instead of 3).
pub(crate) const PG_DELETE_MAILS: &str = "DELETE FROM mail WHERE mail_id IN (SELECT unnest($2::text::bigint[])) AND mail_box = $1 \
     RETURNING mail_size, mail_message";

/// PostgreSQL only: [`Sql::dequeue_acks`] for any number of acks in one statement: `$1`
/// the uids (a text array literal, see [`pg_text_array`](crate::store::ops::pg_text_array)),
/// `$2` the node numbers and `$3` the message ids (bigint array literals), one ack at
/// each index.
pub(crate) const PG_DEQUEUE_ACKS: &str = "DELETE FROM tmtp_queue q USING \
     unnest($1::text::text[], $2::text::bigint[], $3::text::bigint[]) AS a(uid, num, message) \
     WHERE q.queue_uid = a.uid AND q.queue_num = a.num AND q.queue_message = a.message";

/// PostgreSQL only: [`Sql::delete_unqueued`] over the ids of `$1`, a bigint array
/// literal: the messages of an ack batch of thousands in one statement.
pub(crate) const PG_DELETE_UNQUEUED: &str = "DELETE FROM tmtp_message WHERE message_id IN \
     (SELECT unnest($1::text::bigint[])) \
     AND NOT EXISTS (SELECT 1 FROM tmtp_queue WHERE queue_message = tmtp_message.message_id)";

/// PostgreSQL only: [`Sql::delete_chunks`] over the ids of `$1`, a bigint array literal.
pub(crate) const PG_DELETE_CHUNKS: &str = "DELETE FROM tmtp_chunk WHERE chunk_message IN \
     (SELECT unnest($1::text::bigint[])) \
     AND NOT EXISTS (SELECT 1 FROM tmtp_message WHERE message_id = tmtp_chunk.chunk_message)";

/// PostgreSQL only: [`Sql::delete_orphans`] over the ids of `$1`, a bigint array literal.
pub(crate) const PG_DELETE_ORPHANS: &str = "DELETE FROM message WHERE message_id IN (SELECT unnest($1::text::bigint[])) \
     AND NOT EXISTS (SELECT 1 FROM mail WHERE mail_message = message.message_id)";

/// Messages a chunked statement names at once ([`Sql::mails_for_delete`] and the like):
/// a POP3 QUIT deleting many messages costs one round trip per this many, not one per
/// message. A shorter last chunk repeats its last id (a repeated id in `IN` changes
/// nothing), so each statement has one text and one prepared form. With 32, MariaDB
/// spent 166 ms of a QUIT of 2000 messages in its 189 statements; each statement has a
/// cost of its own beside its rows' (issue 16).
pub(crate) const ID_CHUNK: usize = 128;

/// `$1, …, $128`: the [`ID_CHUNK`] ids of a chunked statement; another parameter comes
/// after them, as `$129`.
macro_rules! chunk_ids {
    () => {
        "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
         $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, \
         $37, $38, $39, $40, $41, $42, $43, $44, $45, $46, $47, $48, $49, $50, $51, $52, $53, \
         $54, $55, $56, $57, $58, $59, $60, $61, $62, $63, $64, $65, $66, $67, $68, $69, $70, \
         $71, $72, $73, $74, $75, $76, $77, $78, $79, $80, $81, $82, $83, $84, $85, $86, $87, \
         $88, $89, $90, $91, $92, $93, $94, $95, $96, $97, $98, $99, $100, $101, $102, $103, \
         $104, $105, $106, $107, $108, $109, $110, $111, $112, $113, $114, $115, $116, $117, \
         $118, $119, $120, $121, $122, $123, $124, $125, $126, $127, $128"
    };
}

/// Queue rows a chunked statement names at once ([`Sql::dequeue_acks`],
/// [`Sql::enqueue_rows`]): the acks committed together, or the recipients of a message,
/// cost one round trip per this many. A shorter last chunk repeats its last row.
pub(crate) const ROW_CHUNK: usize = 16;

/// The [`ROW_CHUNK`] `(uid, num, message)` terms of [`Sql::dequeue_acks`], `$1` to `$48`.
macro_rules! ack_terms {
    () => {
        "(queue_uid = $1 AND queue_num = $2 AND queue_message = $3) OR (queue_uid = $4 AND \
         queue_num = $5 AND queue_message = $6) OR (queue_uid = $7 AND queue_num = $8 AND \
         queue_message = $9) OR (queue_uid = $10 AND queue_num = $11 AND queue_message = $12) OR \
         (queue_uid = $13 AND queue_num = $14 AND queue_message = $15) OR (queue_uid = $16 AND \
         queue_num = $17 AND queue_message = $18) OR (queue_uid = $19 AND queue_num = $20 AND \
         queue_message = $21) OR (queue_uid = $22 AND queue_num = $23 AND queue_message = $24) OR \
         (queue_uid = $25 AND queue_num = $26 AND queue_message = $27) OR (queue_uid = $28 AND \
         queue_num = $29 AND queue_message = $30) OR (queue_uid = $31 AND queue_num = $32 AND \
         queue_message = $33) OR (queue_uid = $34 AND queue_num = $35 AND queue_message = $36) OR \
         (queue_uid = $37 AND queue_num = $38 AND queue_message = $39) OR (queue_uid = $40 AND \
         queue_num = $41 AND queue_message = $42) OR (queue_uid = $43 AND queue_num = $44 AND \
         queue_message = $45) OR (queue_uid = $46 AND queue_num = $47 AND queue_message = $48)"
    };
}

/// The [`ROW_CHUNK`] `(uid, num, prio, message)` rows of [`Sql::enqueue_rows`], `$1` to
/// `$64`.
macro_rules! queue_rows {
    () => {
        "($1, $2, $3, $4), ($5, $6, $7, $8), ($9, $10, $11, $12), ($13, $14, $15, $16), ($17, $18, \
         $19, $20), ($21, $22, $23, $24), ($25, $26, $27, $28), ($29, $30, $31, $32), ($33, $34, \
         $35, $36), ($37, $38, $39, $40), ($41, $42, $43, $44), ($45, $46, $47, $48), ($49, $50, \
         $51, $52), ($53, $54, $55, $56), ($57, $58, $59, $60), ($61, $62, $63, $64)"
    };
}

/// SQLite only: a TMTP message whose data came whole, with its chunk and its first
/// [`ROW_CHUNK`] queue rows, in one call to the connection's thread (as
/// [`SQLITE_DELIVER_ONE`]; the statements of [`Sql::insert_ready_message`],
/// [`Sql::insert_chunk`] and [`Sql::enqueue_rows`] in one text). `$1` to `$64` the queue
/// rows as [`Sql::enqueue_rows`] takes them; `$65` message id, `$66` header, `$67` size
/// (bytes), `$68` time (Unix seconds), `$69` data: its chunk is stored only when it is not
/// empty. Further queue rows (more than [`ROW_CHUNK`] recipients) follow as
/// [`Sql::enqueue_rows`].
pub(crate) const SQLITE_STORE_WHOLE: &str = concat!(
    "INSERT INTO tmtp_message (message_id, message_header, message_size, message_ready, message_created) \
     VALUES ($65, $66, $67, 1, $68); \
     INSERT INTO tmtp_chunk (chunk_message, chunk_seq, chunk_data) SELECT $65, 0, $69 WHERE length($69) > 0; \
     INSERT INTO tmtp_queue (queue_uid, queue_num, queue_prio, queue_message) VALUES ",
    queue_rows!(),
    " ON CONFLICT DO NOTHING"
);

macro_rules! statements {
    ($( $(#[doc = $doc:literal])* $name:ident = $text:expr; )*) => {
        /// The store's statements rendered for one dialect.
        pub(crate) struct Sql {
            $( $(#[doc = $doc])* pub(crate) $name: &'static str, )*
        }

        impl Sql {
            /// Every statement rendered for `dialect`.
            pub(crate) fn new(dialect: Dialect) -> Sql {
                Sql { $( $name: render(dialect, $text), )* }
            }
        }

        /// Every statement, for the checks in the tests.
        #[cfg(test)]
        const ALL: &[(&str, Text)] = &[ $( (stringify!($name), $text), )* ];
    };
}

statements! {
    // --- boxes, aliases, nofrom (design.md "Schema", "Mail rules") ---
    /// The box row of address `$1`.
    find_box = Same("SELECT box_address, box_user, box_max_size, box_size, box_max_mails, box_mails FROM box WHERE box_address = $1");
    /// Every alias: `(pattern, target box)`.
    aliases = Same("SELECT alias_pattern, alias_box FROM alias");
    /// A row if some box address is LIKE `$1` (escape `!`).
    domain_has_box = Same("SELECT 1 FROM box WHERE box_address LIKE $1 ESCAPE '!' LIMIT 1");
    /// Every `nofrom` pattern.
    nofrom = Same("SELECT nofrom_pattern FROM nofrom");
    /// Up to 20 box addresses not in lowercase (inserted before migration 0004).
    mixed_case_boxes = Same("SELECT box_address FROM box WHERE box_address <> LOWER(box_address) ORDER BY box_address LIMIT 20");

    // --- delivery ---
    /// Adds one message of `$1` bytes to box `$2` if it is under both limits.
    take_room = Same(take_room!());
    /// Stores a message body (`$1` size, `$2` created, `$3` data); returns its id where
    /// the dialect can (MySQL reports it as the last insert id instead).
    insert_message = Per {
        postgres: "INSERT INTO message (message_size, message_created, message_data) VALUES ($1, $2, $3) RETURNING message_id",
        mysql: "INSERT INTO message (message_size, message_created, message_data) VALUES ($1, $2, $3)",
        sqlite: "INSERT INTO message (message_size, message_created, message_data) VALUES ($1, $2, $3) RETURNING message_id",
    };
    /// A copy: `$1` uid, `$2` box, `$3` message, `$4` size, `$5` created, `$6` trace.
    insert_mail = Same("INSERT INTO mail (mail_uid, mail_box, mail_message, mail_size, mail_created, mail_trace) VALUES ($1, $2, $3, $4, $5, $6)");
    /// A row if a copy with uid `$1` exists.
    mail_by_uid = Same("SELECT 1 FROM mail WHERE mail_uid = $1");

    // --- retrieval ---
    /// `(id, uid, size)` of the copies in box `$1`, in delivery order.
    maildrop = Same("SELECT mail_id, mail_uid, mail_size FROM mail WHERE mail_box = $1 ORDER BY mail_id");
    /// `(trace, body)` of copy `$1` in box `$2`.
    retrieve = Same("SELECT mail_trace, message_data FROM mail JOIN message ON message_id = mail_message WHERE mail_id = $1 AND mail_box = $2");
    /// `(id, trace, body)` of the copies in box `$1` with ids from `$2` to `$3` and at
    /// most `$4` octets each, the first `$5` in delivery order (POP3 read-ahead: one
    /// round trip for a run of messages).
    retrieve_run = Same("SELECT mail_id, mail_trace, message_data FROM mail JOIN message ON message_id = mail_message \
                         WHERE mail_box = $1 AND mail_id >= $2 AND mail_id <= $3 AND mail_size <= $4 ORDER BY mail_id LIMIT $5");
    /// The size of every copy in box `$1` (a recount is summed by the caller: SUM's type
    /// differs between the dialects).
    mail_sizes = Same("SELECT mail_size FROM mail WHERE mail_box = $1");

    // --- users and passwords ---
    /// `(id, password)` of user `$1`.
    user_password = Same("SELECT user_id, user_passwd FROM \"user\" WHERE user_name = $1");
    /// Sets the password of user `$2` to `$1`.
    set_user_password = Same("UPDATE \"user\" SET user_passwd = $1 WHERE user_name = $2");
    /// `(user_id, user_name, user_passwd)` of the user owning box `$1`.
    box_owner = Same("SELECT u.user_id, u.user_name, u.user_passwd FROM box b JOIN \"user\" u ON u.user_id = b.box_user WHERE b.box_address = $1");
    /// Sets `user_passwd = $1` of user `$2` if it is still `$3`.
    replace_password = Same("UPDATE \"user\" SET user_passwd = $1 WHERE user_id = $2 AND user_passwd = $3");

    // --- POP3 maildrop locks ---
    /// Deletes the lease of box `$1` if it expired before `$2`.
    lock_clear_expired = Same("DELETE FROM pop3_lock WHERE lock_box = $1 AND lock_expires < $2");
    /// Inserts the lease (`$1` box, `$2` owner, `$3` expiry) unless the box has one.
    lock_insert = Per {
        postgres: "INSERT INTO pop3_lock (lock_box, lock_owner, lock_expires) VALUES ($1, $2, $3) ON CONFLICT (lock_box) DO NOTHING",
        mysql: "INSERT IGNORE INTO pop3_lock (lock_box, lock_owner, lock_expires) VALUES ($1, $2, $3)",
        sqlite: "INSERT INTO pop3_lock (lock_box, lock_owner, lock_expires) VALUES ($1, $2, $3) ON CONFLICT (lock_box) DO NOTHING",
    };
    /// Sets `lock_expires = $1` of box `$2` held by `$3`.
    lock_refresh = Same("UPDATE pop3_lock SET lock_expires = $1 WHERE lock_box = $2 AND lock_owner = $3");
    /// Deletes the lease of box `$1` held by `$2`.
    lock_release = Same("DELETE FROM pop3_lock WHERE lock_box = $1 AND lock_owner = $2");
    /// Deletes the lease of box `$1` held by `$2` if it has not expired before `$3`.
    lock_release_live = Same("DELETE FROM pop3_lock WHERE lock_box = $1 AND lock_owner = $2 AND lock_expires >= $3");

    // --- Bans ---
    /// Extends the ban of address `$3` to `$1` (reason `$2`) if it ends before `$4` (the
    /// same instant as `$1`).
    ban_extend = Same("UPDATE ban SET ban_until = $1, ban_reason = $2 WHERE ban_address = $3 AND ban_until < $4");
    /// Whether address `$1` has a ban row.
    ban_exists = Same("SELECT 1 FROM ban WHERE ban_address = $1");
    /// Bans address `$1` until `$2` for reason `$3`.
    ban_insert = Same("INSERT INTO ban (ban_address, ban_until, ban_reason) VALUES ($1, $2, $3)");
    /// Bans in force at `$1`: address, until.
    ban_active = Same("SELECT ban_address, ban_until FROM ban WHERE ban_until > $1");
    /// Deletes the ban of address `$1`.
    ban_delete = Same("DELETE FROM ban WHERE ban_address = $1");
    /// Deletes the bans over at `$1`.
    ban_expire = Same("DELETE FROM ban WHERE ban_until <= $1");

    // --- Greylisting (issue 14) ---
    /// `(first, last, passed)` of triplet `$1`.
    grey_get = Same("SELECT grey_first, grey_last, grey_passed FROM greylist WHERE grey_key = $1");
    /// A new triplet `$1` of network `$2`, first seen at `$3` (`$4`, the same instant).
    grey_insert = Same("INSERT INTO greylist (grey_key, grey_net, grey_first, grey_last, grey_passed) VALUES ($1, $2, $3, $4, 0)");
    /// Sets triplet `$4`'s first sighting to `$1`, last to `$2` and passed to `$3`.
    grey_set = Same("UPDATE greylist SET grey_first = $1, grey_last = $2, grey_passed = $3 WHERE grey_key = $4");
    /// Deletes the triplets last seen before `$1`.
    grey_purge = Same("DELETE FROM greylist WHERE grey_last < $1");

    // --- POP3 deletions ---
    /// `(id, size, message)` of the copies among ids `$1`…`$128` ([`ID_CHUNK`]) in box `$129`.
    mails_for_delete = Same(concat!("SELECT mail_id, mail_size, mail_message FROM mail WHERE mail_id IN (", chunk_ids!(), ") AND mail_box = $129"));
    /// Deletes the copies among ids `$1`…`$128` in box `$129`.
    delete_mails = Same(concat!("DELETE FROM mail WHERE mail_id IN (", chunk_ids!(), ") AND mail_box = $129"));
    /// Subtracts `$1` bytes and `$2` messages (never below 0) from box `$3`, sets box_out.
    settle_box = Per {
        postgres: "UPDATE box SET box_size = GREATEST(box_size - $1, 0), box_mails = GREATEST(box_mails - $2, 0), box_out = CURRENT_TIMESTAMP WHERE box_address = $3",
        mysql: "UPDATE box SET box_size = GREATEST(box_size - $1, 0), box_mails = GREATEST(box_mails - $2, 0), box_out = CURRENT_TIMESTAMP WHERE box_address = $3",
        sqlite: "UPDATE box SET box_size = MAX(box_size - $1, 0), box_mails = MAX(box_mails - $2, 0), box_out = CURRENT_TIMESTAMP WHERE box_address = $3",
    };
    /// Deletes the message bodies among ids `$1`…`$128` ([`ID_CHUNK`]) that no copy refers to.
    delete_orphans = Same(concat!("DELETE FROM message WHERE message_id IN (", chunk_ids!(), ") \
                                   AND NOT EXISTS (SELECT 1 FROM mail /*index mail_message_key*/ WHERE mail_message = message.message_id)"));

    // --- administration (mmadmin(8)) ---
    /// Adds user `$1` with password value `$2`.
    admin_add_user = Same("INSERT INTO \"user\" (user_name, user_passwd, user_created) VALUES ($1, $2, CURRENT_TIMESTAMP)");
    /// `(id, name, boxes owned)` of every user, by name.
    admin_users = Same("SELECT u.user_id, u.user_name, (SELECT COUNT(*) FROM box b WHERE b.box_user = u.user_id) \
                        FROM \"user\" u ORDER BY u.user_name");
    /// A row if user `$1` owns a box.
    admin_user_has_box = Same("SELECT 1 FROM box WHERE box_user = $1 LIMIT 1");
    /// Deletes user `$1` (by id).
    admin_delete_user = Same("DELETE FROM \"user\" WHERE user_id = $1");
    /// Adds box `$1` owned by user `$2` with limits `$3` bytes and `$4` messages.
    admin_add_box = Same("INSERT INTO box (box_address, box_user, box_max_size, box_max_mails, box_created) \
                          VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)");
    /// Sets the limits of box `$3` to `$1` bytes and `$2` messages.
    admin_box_limits = Same("UPDATE box SET box_max_size = $1, box_max_mails = $2 WHERE box_address = $3");
    /// `(address, owner name, max size, size, max mails, mails)` of every box.
    admin_boxes = Same("SELECT b.box_address, u.user_name, b.box_max_size, b.box_size, b.box_max_mails, b.box_mails \
                        FROM box b LEFT JOIN \"user\" u ON u.user_id = b.box_user ORDER BY b.box_address");
    /// The message bodies box `$1` refers to.
    admin_box_messages = Same("SELECT DISTINCT mail_message FROM mail WHERE mail_box = $1");
    /// Deletes every copy in box `$1`.
    admin_delete_box_mail = Same("DELETE FROM mail WHERE mail_box = $1");
    /// Deletes every alias to box `$1`.
    admin_delete_box_aliases = Same("DELETE FROM alias WHERE alias_box = $1");
    /// Deletes the POP3 lease of box `$1`.
    admin_delete_box_lock = Same("DELETE FROM pop3_lock WHERE lock_box = $1");
    /// Deletes box `$1`.
    admin_delete_box = Same("DELETE FROM box WHERE box_address = $1");
    /// Adds alias `$1` to box `$2`, owned by user `$3`.
    admin_add_alias = Same("INSERT INTO alias (alias_pattern, alias_box, alias_user, alias_created) VALUES ($1, $2, $3, CURRENT_TIMESTAMP)");
    /// Deletes alias pattern `$1` (every target).
    admin_delete_alias = Same("DELETE FROM alias WHERE alias_pattern = $1");
    /// Deletes alias pattern `$1` to box `$2`.
    admin_delete_alias_to = Same("DELETE FROM alias WHERE alias_pattern = $1 AND alias_box = $2");
    /// Adds `nofrom` pattern `$1`.
    admin_add_nofrom = Same("INSERT INTO nofrom (nofrom_pattern) VALUES ($1)");
    /// Deletes `nofrom` pattern `$1`.
    admin_delete_nofrom = Same("DELETE FROM nofrom WHERE nofrom_pattern = $1");
    /// `(pattern, box)` of the aliases whose box does not exist.
    admin_dangling_aliases = Same("SELECT a.alias_pattern, a.alias_box FROM alias a LEFT JOIN box b ON b.box_address = a.alias_box \
                                   WHERE b.box_address IS NULL ORDER BY a.alias_pattern");
    /// Boxes whose owner does not exist.
    admin_ownerless_boxes = Same("SELECT b.box_address FROM box b LEFT JOIN \"user\" u ON u.user_id = b.box_user \
                                  WHERE u.user_id IS NULL ORDER BY b.box_address");
    /// The boxes whose counters differ from their copies (the caller reads both: SUM's
    /// type differs between the dialects).
    admin_counter_drift = Same("SELECT b.box_address FROM box b LEFT JOIN mail m ON m.mail_box = b.box_address \
                                GROUP BY b.box_address, b.box_size, b.box_mails \
                                HAVING b.box_size <> COALESCE(SUM(m.mail_size), 0) OR b.box_mails <> COUNT(m.mail_id) \
                                ORDER BY b.box_address");
    /// Sets the counters of box `$1` to a recount of its copies, in one statement.
    admin_recount_box = Same("UPDATE box SET box_size = (SELECT COALESCE(SUM(mail_size), 0) FROM mail WHERE mail_box = box.box_address), \
                              box_mails = (SELECT COUNT(*) FROM mail WHERE mail_box = box.box_address) WHERE box_address = $1");
    /// How many message bodies no copy refers to.
    admin_orphan_messages = Same("SELECT COUNT(*) FROM message m WHERE NOT EXISTS (SELECT 1 FROM mail /*index mail_message_key*/ WHERE mail_message = m.message_id)");
    /// Deletes the message bodies no copy refers to.
    admin_delete_orphan_messages = Same("DELETE FROM message WHERE NOT EXISTS (SELECT 1 FROM mail /*index mail_message_key*/ WHERE mail_message = message.message_id)");
    /// `(box, owner)` of the POP3 leases that expired before `$1`.
    admin_stale_leases = Same("SELECT lock_box, lock_owner FROM pop3_lock WHERE lock_expires < $1 ORDER BY lock_box");
    /// Deletes the POP3 leases that expired before `$1`.
    admin_delete_stale_leases = Same("DELETE FROM pop3_lock WHERE lock_expires < $1");

    // --- TMTP accounts, nodes, aliases, groups (spec/tmtp.md §10) ---
    /// A user: `$1` uid, `$2` created, `$3` OpenID Connect identity.
    insert_user = Same("INSERT INTO tmtp_user (tmtp_uid, tmtp_created, tmtp_auth) VALUES ($1, $2, $3)");
    /// A node: `$1` uid, `$2` number, `$3` hash.
    insert_node = Same("INSERT INTO tmtp_node (node_uid, node_num, node_hash) VALUES ($1, $2, $3)");
    /// `(uid, num)` of the live node with hash `$1`.
    node_by_hash = Same("SELECT node_uid, node_num FROM tmtp_node WHERE node_hash = $1 AND node_defunct = 0");
    /// A row if user `$1` exists.
    user_exists = Same("SELECT 1 FROM tmtp_user WHERE tmtp_uid = $1");
    /// The uids among `$1`…`$128` ([`ID_CHUNK`]) that have an account.
    users_among = Same(concat!("SELECT tmtp_uid FROM tmtp_user WHERE tmtp_uid IN (", chunk_ids!(), ")"));
    /// `(uid, live node number)` of each account among `$1`…`$128` ([`ID_CHUNK`]), by
    /// uid and number: one row with a NULL number for an account without live nodes, none
    /// for a uid without an account (a post's recipients named by uid, and the sender's
    /// own nodes, in one round trip).
    users_nodes = Same(concat!("SELECT u.tmtp_uid, n.node_num FROM tmtp_user u LEFT JOIN tmtp_node n ON n.node_uid = u.tmtp_uid AND n.node_defunct = 0 WHERE u.tmtp_uid IN (", chunk_ids!(), ") ORDER BY u.tmtp_uid, n.node_num"));
    /// `(count of live nodes, highest num)` of uid `$1`.
    node_counts = Same("SELECT COUNT(CASE WHEN node_defunct = 0 THEN 1 END), MAX(node_num) FROM tmtp_node WHERE node_uid = $1");
    /// Copies the queue of (`$3`, `$4`) to (`$1`, `$2`).
    copy_queue = Same("INSERT INTO tmtp_queue (queue_uid, queue_num, queue_prio, queue_message) SELECT $1, $2, queue_prio, queue_message FROM tmtp_queue WHERE queue_uid = $3 AND queue_num = $4");
    /// The uid owning alias `$1`.
    alias_owner = Same("SELECT alias_uid FROM tmtp_alias WHERE alias_name = $1");
    /// Alias `$1` for uid `$2`.
    insert_alias = Same("INSERT INTO tmtp_alias (alias_name, alias_uid) VALUES ($1, $2)");
    /// A row if group `$1` has members.
    group_exists = Same("SELECT 1 FROM tmtp_member WHERE member_gid = $1 LIMIT 1");
    /// `(uid, alias, status)` of the members of gid `$1`.
    members = Same("SELECT member_uid, member_alias, member_status FROM tmtp_member WHERE member_gid = $1 ORDER BY member_uid");
    /// `(uid, num)` of the live nodes of the joined members of gid `$1`.
    group_nodes = Same("SELECT n.node_uid, n.node_num FROM tmtp_member m JOIN tmtp_node n ON n.node_uid = m.member_uid WHERE m.member_gid = $1 AND m.member_status = 2 AND n.node_defunct = 0 ORDER BY n.node_uid, n.node_num");
    /// Deletes member `$2` of gid `$1`.
    delete_member = Same("DELETE FROM tmtp_member WHERE member_gid = $1 AND member_uid = $2");
    /// Member `$2` of gid `$1` with alias `$3` and status `$4`.
    insert_member = Same("INSERT INTO tmtp_member (member_gid, member_uid, member_alias, member_status) VALUES ($1, $2, $3, $4)");

    // --- TMTP messages and queues (spec/tmtp.md §8) ---
    /// Message `$1` (not ready), created `$2`.
    begin_message = Same("INSERT INTO tmtp_message (message_id, message_created) VALUES ($1, $2)");
    /// Message `$1`, ready at once: header `$2`, size `$3`, created `$4` (a message whose
    /// data came whole, stored in one transaction with its chunk and queue rows).
    insert_ready_message = Same("INSERT INTO tmtp_message (message_id, message_header, message_size, message_ready, message_created) VALUES ($1, $2, $3, 1, $4)");
    /// Chunk `$2` of message `$1`: `$3`.
    insert_chunk = Same("INSERT INTO tmtp_chunk (chunk_message, chunk_seq, chunk_data) VALUES ($1, $2, $3)");
    /// Sets header `$1`, size `$2`, ready of message `$3`.
    ready_message = Same("UPDATE tmtp_message SET message_header = $1, message_size = $2, message_ready = 1 WHERE message_id = $3");
    /// Queues [`ROW_CHUNK`] rows: message `$4` with priority `$3` for node (`$1`, `$2`),
    /// and so on. The padding of a short chunk repeats a row, which the conflict clause
    /// passes over (a message is never queued twice for one node otherwise).
    enqueue_rows = Per {
        postgres: concat!("INSERT INTO tmtp_queue (queue_uid, queue_num, queue_prio, queue_message) VALUES ", queue_rows!(), " ON CONFLICT DO NOTHING"),
        mysql: concat!("INSERT IGNORE INTO tmtp_queue (queue_uid, queue_num, queue_prio, queue_message) VALUES ", queue_rows!()),
        sqlite: concat!("INSERT INTO tmtp_queue (queue_uid, queue_num, queue_prio, queue_message) VALUES ", queue_rows!(), " ON CONFLICT DO NOTHING"),
    };
    /// `(prio, message)` of node (`$1`, `$2`), in delivery order.
    queue = Same("SELECT queue_prio, queue_message FROM tmtp_queue WHERE queue_uid = $1 AND queue_num = $2 ORDER BY queue_prio, queue_message");
    /// The first `$6` of those after (`$3` = `$4`, `$5`) in delivery order (the next
    /// page).
    queue_page_after = Same("SELECT queue_prio, queue_message FROM tmtp_queue WHERE queue_uid = $1 AND queue_num = $2 AND (queue_prio > $3 OR (queue_prio = $4 AND queue_message > $5)) ORDER BY queue_prio, queue_message LIMIT $6");
    /// The first `$3` of those (a page).
    queue_page = Same("SELECT queue_prio, queue_message FROM tmtp_queue WHERE queue_uid = $1 AND queue_num = $2 ORDER BY queue_prio, queue_message LIMIT $3");
    /// `(header, size)` of ready message `$1`.
    message = Same("SELECT message_header, message_size FROM tmtp_message WHERE message_id = $1 AND message_ready = 1");
    /// `(header, size, chunk 0 or NULL)` of ready message `$1`: the start of a delivery
    /// in one round trip.
    message_start = Same("SELECT m.message_header, m.message_size, c.chunk_data FROM tmtp_message m LEFT JOIN tmtp_chunk c ON c.chunk_message = m.message_id AND c.chunk_seq = 0 WHERE m.message_id = $1 AND m.message_ready = 1");
    /// `(seq, data)` of the first `$3` chunks of message `$1` from chunk `$2` on.
    chunks = Same("SELECT chunk_seq, chunk_data FROM tmtp_chunk WHERE chunk_message = $1 AND chunk_seq >= $2 ORDER BY chunk_seq LIMIT $3");
    /// Deletes the queue rows of [`ROW_CHUNK`] acks: (`$1` uid, `$2` num, `$3` message),
    /// (`$4`, `$5`, `$6`), … (a repeated row deletes nothing more).
    dequeue_acks = Same(concat!("DELETE FROM tmtp_queue WHERE ", ack_terms!()));
    /// Deletes the messages among ids `$1`…`$128` ([`ID_CHUNK`]) that no queue row refers
    /// to.
    delete_unqueued = Same(concat!("DELETE FROM tmtp_message WHERE message_id IN (", chunk_ids!(), ") AND NOT EXISTS (SELECT 1 FROM tmtp_queue /*index tmtp_queue_message*/ WHERE queue_message = tmtp_message.message_id)"));
    /// Deletes the chunks of the messages among ids `$1`…`$128` ([`ID_CHUNK`]) that no
    /// longer exist.
    delete_chunks = Same(concat!("DELETE FROM tmtp_chunk WHERE chunk_message IN (", chunk_ids!(), ") AND NOT EXISTS (SELECT 1 FROM tmtp_message WHERE message_id = tmtp_chunk.chunk_message)"));
    /// Deletes messages not ready (a crash during their upload).
    delete_unready = Same("DELETE FROM tmtp_message WHERE message_ready = 0");
    /// Deletes chunks without a message.
    delete_stray_chunks = Same("DELETE FROM tmtp_chunk WHERE NOT EXISTS (SELECT 1 FROM tmtp_message WHERE message_id = chunk_message)");
    /// The highest message id.
    max_message_id = Same("SELECT MAX(message_id) FROM tmtp_message");

    // --- Several mmtmtpd on one database (migration 0006) ---
    /// Removes node (`$1`, `$2`)'s link row if its lease ran out before `$3` or it is a
    /// stale row of instance `$4` (whose live links are known in its memory).
    link_clear = Same("DELETE FROM tmtp_link WHERE link_uid = $1 AND link_num = $2 AND (link_expires < $3 OR link_instance = $4)");
    /// Node (`$1`, `$2`)'s link on instance `$3`, link `$4`, lease until `$5`, unless
    /// another holds it.
    link_insert = Per {
        postgres: "INSERT INTO tmtp_link (link_uid, link_num, link_instance, link_token, link_expires) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (link_uid, link_num) DO NOTHING",
        mysql: "INSERT IGNORE INTO tmtp_link (link_uid, link_num, link_instance, link_token, link_expires) VALUES ($1, $2, $3, $4, $5)",
        sqlite: "INSERT INTO tmtp_link (link_uid, link_num, link_instance, link_token, link_expires) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (link_uid, link_num) DO NOTHING",
    };
    /// Deletes node (`$1`, `$2`)'s link row if instance `$3`'s link `$4` holds it.
    link_release = Same("DELETE FROM tmtp_link WHERE link_uid = $1 AND link_num = $2 AND link_instance = $3 AND link_token = $4");
    /// Renews every lease of instance `$2` until `$1`.
    link_renew = Same("UPDATE tmtp_link SET link_expires = $1 WHERE link_instance = $2");
    /// `(instance, uid, num)` of the recipients of message `$1` connected to an instance
    /// other than `$2`, with leases live at `$3`.
    link_remote_recipients = Same("SELECT l.link_instance, l.link_uid, l.link_num FROM tmtp_queue q JOIN tmtp_link l ON l.link_uid = q.queue_uid AND l.link_num = q.queue_num WHERE q.queue_message = $1 AND l.link_instance <> $2 AND l.link_expires >= $3");
    /// The instances other than `$2` where a node of uid `$1` is connected (lease live at
    /// `$3`).
    link_remote_instances = Same("SELECT DISTINCT link_instance FROM tmtp_link WHERE link_uid = $1 AND link_instance <> $2 AND link_expires >= $3");
    /// Whether an instance other than `$1` holds a live link (lease live at `$2`).
    link_others = Same("SELECT 1 FROM tmtp_link WHERE link_instance <> $1 AND link_expires >= $2 LIMIT 1");
    /// Work for instance `$1`: node (`$2`, `$3`), frame `$4` (NULL: read the queue), at `$5`.
    wake_insert = Same("INSERT INTO tmtp_wake (wake_instance, wake_uid, wake_num, wake_frame, wake_created) VALUES ($1, $2, $3, $4, $5)");
    /// Instance `$1`'s work, oldest first, `$2` rows at most.
    wake_read = Same("SELECT wake_id, wake_uid, wake_num, wake_frame FROM tmtp_wake WHERE wake_instance = $1 ORDER BY wake_id LIMIT $2");
    /// Deletes instance `$1`'s work up to id `$2`.
    wake_delete = Same("DELETE FROM tmtp_wake WHERE wake_instance = $1 AND wake_id <= $2");
    /// Deletes work older than `$1` (left for an instance that died).
    wake_expire = Same("DELETE FROM tmtp_wake WHERE wake_created < $1");
    /// Tells every listening instance to read its work (PostgreSQL, delivered at commit).
    wake_notify = Same("SELECT pg_notify('mmtmtpd_wake', '')");
    /// Raises the id block to at least `$1` (`$2` the same) and takes `$3` ids after it.
    idblock_take = Same("UPDATE tmtp_idblock SET block_next = (CASE WHEN block_next > $1 THEN block_next ELSE $2 END) + $3 WHERE block_key = 1");
    /// The end of the block just taken.
    idblock_end = Same("SELECT block_next FROM tmtp_idblock WHERE block_key = 1");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text for several deliveries is the one for a delivery repeated, its parameters
    /// anonymous, each returning its place; the order of its parameters names each of
    /// the seven, as the text for one delivery does.
    #[test]
    fn sqlite_deliver_many_repeats_one_delivery() {
        let order = sqlite_deliver_order();
        let one = SQLITE_DELIVER_ONE;
        assert_eq!(order.len(), one.matches('$').count());
        let mut named: Vec<usize> = order.to_vec();
        named.sort_unstable();
        named.dedup();
        assert_eq!(named, (1..=7).collect::<Vec<_>>());
        // The n-th `$` of the text for one is the n-th of `order`.
        for (n, part) in one.split('$').skip(1).enumerate() {
            assert!(part.starts_with(&order[n].to_string()), "{n}: {part}");
        }
        for n in [1, 2, 4, 8, SQLITE_DELIVER_MANY_MAX] {
            let text = sqlite_deliver_many(n);
            assert!(!text.contains('$'), "{n}: {text}");
            assert_eq!(text.matches('?').count(), n * order.len(), "{n}");
            for k in 0..n {
                assert_eq!(text.matches(&format!("RETURNING {k};")).count(), 1, "{n}: {text}");
            }
            assert_eq!(text.matches("RETURNING").count(), n);
        }
    }

    #[test]
    fn placeholders_and_quoting_per_dialect() {
        let t = Same("SELECT x FROM \"user\" WHERE a = $1 AND b = $2 AND c LIKE '%x'");
        assert_eq!(render(Dialect::Postgres, t), "SELECT x FROM \"user\" WHERE a = $1 AND b = $2 AND c LIKE '%x'");
        assert_eq!(render(Dialect::MySql, t), "SELECT x FROM `user` WHERE a = ? AND b = ? AND c LIKE '%x'");
        assert_eq!(render(Dialect::Sqlite, t), "SELECT x FROM \"user\" WHERE a = ?1 AND b = ?2 AND c LIKE '%x'");
        assert_eq!(render(Dialect::MySql, Same("a = $10, b = \"x\"")), "a = ?, b = \"x\"");
    }

    /// The chunked statements bind exactly [`ID_CHUNK`] ids.
    #[test]
    fn chunk_ids_name_id_chunk_parameters() {
        let list: Vec<&str> = chunk_ids!().split(", ").collect();
        let want: Vec<String> = (1..=ID_CHUNK).map(|n| format!("${n}")).collect();
        assert_eq!(list, want);
    }

    #[test]
    fn index_hints_are_for_mysql_only() {
        let t = Same("SELECT 1 FROM a /*index a_b*/ WHERE b = $1 AND c = 4/2 /* note */");
        assert_eq!(render(Dialect::MySql, t), "SELECT 1 FROM a FORCE INDEX (a_b) WHERE b = ? AND c = 4/2 /* note */");
        assert_eq!(render(Dialect::Postgres, t), "SELECT 1 FROM a WHERE b = $1 AND c = 4/2 /* note */");
        assert_eq!(render(Dialect::Sqlite, t), "SELECT 1 FROM a WHERE b = ?1 AND c = 4/2 /* note */");
        let orphans = Sql::new(Dialect::MySql).delete_orphans;
        assert!(orphans.contains("FROM mail FORCE INDEX (mail_message_key) WHERE"), "{orphans}");
    }

    /// MySQL binds `?` in order: every statement must use `$1`, `$2`, … in order, once
    /// each, in every dialect's text.
    #[test]
    fn parameters_are_used_in_order_once() {
        for (name, text) in ALL {
            let texts = match *text {
                Same(t) => vec![t],
                Per { postgres, mysql, sqlite } => vec![postgres, mysql, sqlite],
            };
            for t in texts {
                let used: Vec<usize> = t
                    .split('$')
                    .skip(1)
                    .map(|s| s.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0))
                    .collect();
                let want: Vec<usize> = (1..=used.len()).collect();
                assert_eq!(used, want, "{name}: {t}");
            }
        }
    }

    #[test]
    fn most_statements_are_written_once() {
        // The lease inserts (POP3 maildrop lock, TMTP link) and the chunked queue insert
        // (`INSERT IGNORE` on MySQL, `ON CONFLICT DO NOTHING` elsewhere), and two others.
        let per = ALL.iter().filter(|(_, t)| matches!(t, Per { .. })).count();
        assert!(per <= 5, "{per} statements written per dialect");
    }
}
