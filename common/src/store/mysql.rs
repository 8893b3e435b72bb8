//! MySQL/MariaDB SQL text.

use sqlx::{MySql, MySqlConnection};

const SQL: super::backend::Sql = super::backend::Sql {
    find_box: "SELECT box_address, box_user, box_max_size, box_size, box_max_mails, box_mails FROM box WHERE box_address = ?",
    aliases: "SELECT alias_pattern, alias_box FROM alias",
    domain_has_box: "SELECT CAST(1 AS SIGNED) FROM box WHERE box_address LIKE ? ESCAPE '!' LIMIT 1",
    nofrom: "SELECT nofrom_pattern FROM nofrom",
    take_room: "UPDATE box SET box_size = box_size + ?, box_mails = box_mails + 1, box_in = CURRENT_TIMESTAMP \
                WHERE box_address = ? AND (box_max_mails = 0 OR box_mails < box_max_mails) \
                AND (box_max_size = 0 OR box_size < box_max_size)",
    insert_mail: "INSERT INTO mail (mail_uid, mail_box, mail_message, mail_size, mail_created, mail_trace) VALUES (?, ?, ?, ?, ?, ?)",
    maildrop: "SELECT mail_id, mail_uid, mail_size FROM mail WHERE mail_box = ? ORDER BY mail_id",
    mail_by_uid: "SELECT 1 FROM mail WHERE mail_uid = ?",
    retrieve: "SELECT mail_trace, message_data FROM mail JOIN message ON message_id = mail_message WHERE mail_id = ? AND mail_box = ?",
    recount: "SELECT CAST(SUM(mail_size) AS SIGNED), COUNT(*) FROM mail WHERE mail_box = ?",
    user_password: "SELECT user_id, user_passwd FROM `user` WHERE user_name = ?",
    set_user_password: "UPDATE `user` SET user_passwd = ? WHERE user_name = ?",
    box_owner: "SELECT u.user_id, u.user_name, u.user_passwd FROM box b JOIN `user` u ON u.user_id = b.box_user WHERE b.box_address = ?",
    replace_password: "UPDATE `user` SET user_passwd = ? WHERE user_id = ? AND user_passwd = ?",
    lock_clear_expired: "DELETE FROM pop3_lock WHERE lock_box = ? AND lock_expires < ?",
    lock_insert: "INSERT IGNORE INTO pop3_lock (lock_box, lock_owner, lock_expires) VALUES (?, ?, ?)",
    lock_refresh: "UPDATE pop3_lock SET lock_expires = ? WHERE lock_box = ? AND lock_owner = ?",
    lock_release: "DELETE FROM pop3_lock WHERE lock_box = ? AND lock_owner = ?",
    lock_release_live: "DELETE FROM pop3_lock WHERE lock_box = ? AND lock_owner = ? AND lock_expires >= ?",
    mail_for_delete: "SELECT mail_size, mail_message FROM mail WHERE mail_id = ? AND mail_box = ?",
    delete_mail: "DELETE FROM mail WHERE mail_id = ? AND mail_box = ?",
    settle_box: "UPDATE box SET box_size = GREATEST(box_size - ?, 0), box_mails = GREATEST(box_mails - ?, 0), \
                 box_out = CURRENT_TIMESTAMP WHERE box_address = ?",
    delete_orphan: "DELETE FROM message WHERE message_id = ? AND NOT EXISTS (SELECT 1 FROM mail WHERE mail_message = ?)",
};

const BEGIN: &str = "BEGIN";

fn keep(_: &sqlx::Pool<MySql>) -> bool {
    false
}

async fn insert_message(conn: &mut MySqlConnection, size: i64, created: i64, data: &[u8]) -> Result<i64, sqlx::Error> {
    let done = sqlx::query("INSERT INTO message (message_size, message_created, message_data) VALUES (?, ?, ?)")
        .bind(size)
        .bind(created)
        .bind(data)
        .execute(&mut *conn)
        .await?;
    i64::try_from(done.last_insert_id()).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

super::backend::operations!(MySql, SQL, insert_message);

const TMTP: super::tmtp::TmtpSql = super::tmtp::TmtpSql {
    insert_user: "INSERT INTO tmtp_user (tmtp_uid, tmtp_created, tmtp_auth) VALUES (?, ?, ?)",
    insert_node: "INSERT INTO tmtp_node (node_uid, node_num, node_hash) VALUES (?, ?, ?)",
    node_by_hash: "SELECT node_uid, node_num FROM tmtp_node WHERE node_hash = ? AND node_defunct = 0",
    user_exists: "SELECT CAST(1 AS SIGNED) FROM tmtp_user WHERE tmtp_uid = ?",
    nodes: "SELECT node_num FROM tmtp_node WHERE node_uid = ? AND node_defunct = 0 ORDER BY node_num",
    node_counts: "SELECT COUNT(CASE WHEN node_defunct = 0 THEN 1 END), MAX(node_num) FROM tmtp_node WHERE node_uid = ?",
    copy_queue: "INSERT INTO tmtp_queue (queue_uid, queue_num, queue_prio, queue_message) SELECT ?, ?, queue_prio, queue_message FROM tmtp_queue WHERE queue_uid = ? AND queue_num = ?",
    alias_owner: "SELECT alias_uid FROM tmtp_alias WHERE alias_name = ?",
    insert_alias: "INSERT INTO tmtp_alias (alias_name, alias_uid) VALUES (?, ?)",
    group_exists: "SELECT CAST(1 AS SIGNED) FROM tmtp_member WHERE member_gid = ? LIMIT 1",
    members: "SELECT member_uid, member_alias, member_status FROM tmtp_member WHERE member_gid = ? ORDER BY member_uid",
    group_nodes: "SELECT n.node_uid, n.node_num FROM tmtp_member m JOIN tmtp_node n ON n.node_uid = m.member_uid WHERE m.member_gid = ? AND m.member_status = 2 AND n.node_defunct = 0 ORDER BY n.node_uid, n.node_num",
    delete_member: "DELETE FROM tmtp_member WHERE member_gid = ? AND member_uid = ?",
    insert_member: "INSERT INTO tmtp_member (member_gid, member_uid, member_alias, member_status) VALUES (?, ?, ?, ?)",
    begin_message: "INSERT INTO tmtp_message (message_id, message_created) VALUES (?, ?)",
    insert_chunk: "INSERT INTO tmtp_chunk (chunk_message, chunk_seq, chunk_data) VALUES (?, ?, ?)",
    ready_message: "UPDATE tmtp_message SET message_header = ?, message_size = ?, message_ready = 1 WHERE message_id = ?",
    enqueue: "INSERT INTO tmtp_queue (queue_uid, queue_num, queue_prio, queue_message) VALUES (?, ?, ?, ?)",
    queue: "SELECT queue_prio, queue_message FROM tmtp_queue WHERE queue_uid = ? AND queue_num = ? ORDER BY queue_prio, queue_message",
    queue_next: "SELECT queue_prio, queue_message FROM tmtp_queue WHERE queue_uid = ? AND queue_num = ? ORDER BY queue_prio, queue_message LIMIT 1",
    message: "SELECT message_header, message_size FROM tmtp_message WHERE message_id = ? AND message_ready = 1",
    chunk: "SELECT chunk_data FROM tmtp_chunk WHERE chunk_message = ? AND chunk_seq = ?",
    dequeue: "DELETE FROM tmtp_queue WHERE queue_uid = ? AND queue_num = ? AND queue_message = ?",
    delete_unqueued: "DELETE FROM tmtp_message WHERE message_id = ? AND NOT EXISTS (SELECT 1 FROM tmtp_queue WHERE queue_message = ?)",
    delete_chunks: "DELETE FROM tmtp_chunk WHERE chunk_message = ? AND NOT EXISTS (SELECT 1 FROM tmtp_message WHERE message_id = ?)",
    delete_unready: "DELETE FROM tmtp_message WHERE message_ready = 0",
    delete_stray_chunks: "DELETE FROM tmtp_chunk WHERE NOT EXISTS (SELECT 1 FROM tmtp_message WHERE message_id = chunk_message)",
    max_message_id: "SELECT MAX(message_id) FROM tmtp_message",
};

super::tmtp::tmtp_operations!(MySql, TMTP);
