//! SQLite SQL text.

use sqlx::{Sqlite, Transaction};

const SQL: super::backend::Sql = super::backend::Sql {
    find_box: "SELECT box_address, box_user, box_max_size, box_size, box_max_mails, box_mails FROM box WHERE box_address = ?1",
    aliases: "SELECT alias_pattern, alias_box FROM alias",
    domain_has_box: "SELECT 1 FROM box WHERE box_address LIKE ?1 ESCAPE '!' LIMIT 1",
    nofrom: "SELECT nofrom_pattern FROM nofrom",
    take_room: "UPDATE box SET box_size = box_size + ?1, box_mails = box_mails + 1, box_in = CURRENT_TIMESTAMP \
                WHERE box_address = ?2 AND (box_max_mails = 0 OR box_mails < box_max_mails) \
                AND (box_max_size = 0 OR box_size < box_max_size)",
    insert_mail: "INSERT INTO mail (mail_uid, mail_box, mail_message, mail_size, mail_created, mail_trace) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    maildrop: "SELECT mail_id, mail_uid, mail_size FROM mail WHERE mail_box = ?1 ORDER BY mail_id",
    retrieve: "SELECT mail_trace, message_data FROM mail JOIN message ON message_id = mail_message WHERE mail_id = ?1 AND mail_box = ?2",
    recount: "SELECT SUM(mail_size), COUNT(*) FROM mail WHERE mail_box = ?1",
    user_password: "SELECT user_id, user_passwd FROM \"user\" WHERE user_name = ?1",
    set_user_password: "UPDATE \"user\" SET user_passwd = ?1 WHERE user_name = ?2",
    box_owner: "SELECT u.user_id, u.user_name, u.user_passwd FROM box b JOIN \"user\" u ON u.user_id = b.box_user WHERE b.box_address = ?1",
    replace_password: "UPDATE \"user\" SET user_passwd = ?1 WHERE user_id = ?2 AND user_passwd = ?3",
    lock_clear_expired: "DELETE FROM pop3_lock WHERE lock_box = ?1 AND lock_expires < ?2",
    lock_insert: "INSERT INTO pop3_lock (lock_box, lock_owner, lock_expires) VALUES (?1, ?2, ?3)",
    lock_refresh: "UPDATE pop3_lock SET lock_expires = ?1 WHERE lock_box = ?2 AND lock_owner = ?3",
    lock_release: "DELETE FROM pop3_lock WHERE lock_box = ?1 AND lock_owner = ?2",
    mail_for_delete: "SELECT mail_size, mail_message FROM mail WHERE mail_id = ?1 AND mail_box = ?2",
    delete_mail: "DELETE FROM mail WHERE mail_id = ?1 AND mail_box = ?2",
    settle_box: "UPDATE box SET box_size = MAX(box_size - ?1, 0), box_mails = MAX(box_mails - ?2, 0), \
                 box_out = CURRENT_TIMESTAMP WHERE box_address = ?3",
    delete_orphan: "DELETE FROM message WHERE message_id = ?1 AND NOT EXISTS (SELECT 1 FROM mail WHERE mail_message = ?2)",
};

async fn insert_message(
    tx: &mut Transaction<'_, Sqlite>,
    size: i64,
    created: i64,
    data: &[u8],
) -> Result<i64, sqlx::Error> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO message (message_size, message_created, message_data) VALUES (?1, ?2, ?3) RETURNING message_id",
    )
    .bind(size)
    .bind(created)
    .bind(data)
    .fetch_one(&mut **tx)
    .await?;
    Ok(id)
}

super::backend::operations!(Sqlite, SQL, insert_message);
