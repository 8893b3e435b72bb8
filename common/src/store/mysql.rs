//! MySQL/MariaDB SQL text.

use sqlx::{MySql, Transaction};

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
    retrieve: "SELECT mail_trace, message_data FROM mail JOIN message ON message_id = mail_message WHERE mail_id = ? AND mail_box = ?",
    recount: "SELECT CAST(SUM(mail_size) AS SIGNED), COUNT(*) FROM mail WHERE mail_box = ?",
    user_password: "SELECT user_id, user_passwd FROM `user` WHERE user_name = ?",
    set_user_password: "UPDATE `user` SET user_passwd = ? WHERE user_name = ?",
    box_owner: "SELECT u.user_id, u.user_name, u.user_passwd FROM box b JOIN `user` u ON u.user_id = b.box_user WHERE b.box_address = ?",
    replace_password: "UPDATE `user` SET user_passwd = ? WHERE user_id = ? AND user_passwd = ?",
    lock_clear_expired: "DELETE FROM pop3_lock WHERE lock_box = ? AND lock_expires < ?",
    lock_insert: "INSERT INTO pop3_lock (lock_box, lock_owner, lock_expires) VALUES (?, ?, ?)",
    lock_refresh: "UPDATE pop3_lock SET lock_expires = ? WHERE lock_box = ? AND lock_owner = ?",
    lock_release: "DELETE FROM pop3_lock WHERE lock_box = ? AND lock_owner = ?",
    mail_for_delete: "SELECT mail_size, mail_message FROM mail WHERE mail_id = ? AND mail_box = ?",
    delete_mail: "DELETE FROM mail WHERE mail_id = ? AND mail_box = ?",
    settle_box: "UPDATE box SET box_size = GREATEST(box_size - ?, 0), box_mails = GREATEST(box_mails - ?, 0), \
                 box_out = CURRENT_TIMESTAMP WHERE box_address = ?",
    delete_orphan: "DELETE FROM message WHERE message_id = ? AND NOT EXISTS (SELECT 1 FROM mail WHERE mail_message = ?)",
};

async fn insert_message(
    tx: &mut Transaction<'_, MySql>,
    size: i64,
    created: i64,
    data: &[u8],
) -> Result<i64, sqlx::Error> {
    let done = sqlx::query("INSERT INTO message (message_size, message_created, message_data) VALUES (?, ?, ?)")
        .bind(size)
        .bind(created)
        .bind(data)
        .execute(&mut **tx)
        .await?;
    i64::try_from(done.last_insert_id()).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

super::backend::operations!(MySql, SQL, insert_message);
