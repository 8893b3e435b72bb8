//! PostgreSQL SQL text.

use sqlx::{PgConnection, Postgres};

const SQL: super::backend::Sql = super::backend::Sql {
    find_box: "SELECT box_address, box_user, box_max_size, box_size, box_max_mails, box_mails FROM box WHERE box_address = $1",
    aliases: "SELECT alias_pattern, alias_box FROM alias",
    domain_has_box: "SELECT 1::BIGINT FROM box WHERE box_address LIKE $1 ESCAPE '!' LIMIT 1",
    nofrom: "SELECT nofrom_pattern FROM nofrom",
    take_room: "UPDATE box SET box_size = box_size + $1, box_mails = box_mails + 1, box_in = CURRENT_TIMESTAMP \
                WHERE box_address = $2 AND (box_max_mails = 0 OR box_mails < box_max_mails) \
                AND (box_max_size = 0 OR box_size < box_max_size)",
    insert_mail: "INSERT INTO mail (mail_uid, mail_box, mail_message, mail_size, mail_created, mail_trace) VALUES ($1, $2, $3, $4, $5, $6)",
    maildrop: "SELECT mail_id, mail_uid, mail_size FROM mail WHERE mail_box = $1 ORDER BY mail_id",
    mail_by_uid: "SELECT 1::BIGINT FROM mail WHERE mail_uid = $1",
    retrieve: "SELECT mail_trace, message_data FROM mail JOIN message ON message_id = mail_message WHERE mail_id = $1 AND mail_box = $2",
    recount: "SELECT SUM(mail_size)::BIGINT, COUNT(*) FROM mail WHERE mail_box = $1",
    user_password: "SELECT user_id, user_passwd FROM \"user\" WHERE user_name = $1",
    set_user_password: "UPDATE \"user\" SET user_passwd = $1 WHERE user_name = $2",
    box_owner: "SELECT u.user_id, u.user_name, u.user_passwd FROM box b JOIN \"user\" u ON u.user_id = b.box_user WHERE b.box_address = $1",
    replace_password: "UPDATE \"user\" SET user_passwd = $1 WHERE user_id = $2 AND user_passwd = $3",
    lock_clear_expired: "DELETE FROM pop3_lock WHERE lock_box = $1 AND lock_expires < $2",
    lock_insert: "INSERT INTO pop3_lock (lock_box, lock_owner, lock_expires) VALUES ($1, $2, $3) ON CONFLICT (lock_box) DO NOTHING",
    lock_refresh: "UPDATE pop3_lock SET lock_expires = $1 WHERE lock_box = $2 AND lock_owner = $3",
    lock_release: "DELETE FROM pop3_lock WHERE lock_box = $1 AND lock_owner = $2",
    lock_release_live: "DELETE FROM pop3_lock WHERE lock_box = $1 AND lock_owner = $2 AND lock_expires >= $3",
    mail_for_delete: "SELECT mail_size, mail_message FROM mail WHERE mail_id = $1 AND mail_box = $2",
    delete_mail: "DELETE FROM mail WHERE mail_id = $1 AND mail_box = $2",
    settle_box: "UPDATE box SET box_size = GREATEST(box_size - $1, 0), box_mails = GREATEST(box_mails - $2, 0), \
                 box_out = CURRENT_TIMESTAMP WHERE box_address = $3",
    delete_orphan: "DELETE FROM message WHERE message_id = $1 AND NOT EXISTS (SELECT 1 FROM mail WHERE mail_message = $2)",
};

const BEGIN: &str = "BEGIN";

fn keep(_: &sqlx::Pool<Postgres>) -> bool {
    false
}

async fn insert_message(conn: &mut PgConnection, size: i64, created: i64, data: &[u8]) -> Result<i64, sqlx::Error> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO message (message_size, message_created, message_data) VALUES ($1, $2, $3) RETURNING message_id",
    )
    .bind(size)
    .bind(created)
    .bind(data)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

super::backend::operations!(Postgres, SQL, insert_message);

const TMTP: super::tmtp::TmtpSql = super::tmtp::TmtpSql {
    insert_user: "INSERT INTO tmtp_user (tmtp_uid, tmtp_created, tmtp_auth) VALUES ($1, $2, $3)",
    insert_node: "INSERT INTO tmtp_node (node_uid, node_num, node_hash) VALUES ($1, $2, $3)",
    node_by_hash: "SELECT node_uid, node_num FROM tmtp_node WHERE node_hash = $1 AND node_defunct = 0",
    user_exists: "SELECT 1::BIGINT FROM tmtp_user WHERE tmtp_uid = $1",
    nodes: "SELECT node_num FROM tmtp_node WHERE node_uid = $1 AND node_defunct = 0 ORDER BY node_num",
    node_counts: "SELECT COUNT(CASE WHEN node_defunct = 0 THEN 1 END), MAX(node_num) FROM tmtp_node WHERE node_uid = $1",
    copy_queue: "INSERT INTO tmtp_queue (queue_uid, queue_num, queue_prio, queue_message) SELECT $1, $2, queue_prio, queue_message FROM tmtp_queue WHERE queue_uid = $3 AND queue_num = $4",
    alias_owner: "SELECT alias_uid FROM tmtp_alias WHERE alias_name = $1",
    insert_alias: "INSERT INTO tmtp_alias (alias_name, alias_uid) VALUES ($1, $2)",
    group_exists: "SELECT 1::BIGINT FROM tmtp_member WHERE member_gid = $1 LIMIT 1",
    members: "SELECT member_uid, member_alias, member_status FROM tmtp_member WHERE member_gid = $1 ORDER BY member_uid",
    group_nodes: "SELECT n.node_uid, n.node_num FROM tmtp_member m JOIN tmtp_node n ON n.node_uid = m.member_uid WHERE m.member_gid = $1 AND m.member_status = 2 AND n.node_defunct = 0 ORDER BY n.node_uid, n.node_num",
    delete_member: "DELETE FROM tmtp_member WHERE member_gid = $1 AND member_uid = $2",
    insert_member: "INSERT INTO tmtp_member (member_gid, member_uid, member_alias, member_status) VALUES ($1, $2, $3, $4)",
    begin_message: "INSERT INTO tmtp_message (message_id, message_created) VALUES ($1, $2)",
    insert_chunk: "INSERT INTO tmtp_chunk (chunk_message, chunk_seq, chunk_data) VALUES ($1, $2, $3)",
    ready_message: "UPDATE tmtp_message SET message_header = $1, message_size = $2, message_ready = 1 WHERE message_id = $3",
    enqueue: "INSERT INTO tmtp_queue (queue_uid, queue_num, queue_prio, queue_message) VALUES ($1, $2, $3, $4)",
    queue: "SELECT queue_prio, queue_message FROM tmtp_queue WHERE queue_uid = $1 AND queue_num = $2 ORDER BY queue_prio, queue_message",
    queue_next: "SELECT queue_prio, queue_message FROM tmtp_queue WHERE queue_uid = $1 AND queue_num = $2 ORDER BY queue_prio, queue_message LIMIT 1",
    message: "SELECT message_header, message_size FROM tmtp_message WHERE message_id = $1 AND message_ready = 1",
    chunk: "SELECT chunk_data FROM tmtp_chunk WHERE chunk_message = $1 AND chunk_seq = $2",
    dequeue: "DELETE FROM tmtp_queue WHERE queue_uid = $1 AND queue_num = $2 AND queue_message = $3",
    delete_unqueued: "DELETE FROM tmtp_message WHERE message_id = $1 AND NOT EXISTS (SELECT 1 FROM tmtp_queue WHERE queue_message = $2)",
    delete_chunks: "DELETE FROM tmtp_chunk WHERE chunk_message = $1 AND NOT EXISTS (SELECT 1 FROM tmtp_message WHERE message_id = $2)",
    delete_unready: "DELETE FROM tmtp_message WHERE message_ready = 0",
    delete_stray_chunks: "DELETE FROM tmtp_chunk WHERE NOT EXISTS (SELECT 1 FROM tmtp_message WHERE message_id = chunk_message)",
    max_message_id: "SELECT MAX(message_id) FROM tmtp_message",
};

super::tmtp::tmtp_operations!(Postgres, TMTP);
