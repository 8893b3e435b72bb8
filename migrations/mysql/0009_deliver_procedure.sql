-- A delivery of one copy in one round trip (issue 16): the body, the box's counters and
-- the copy in one transaction run by the server. Sent as five statements (BEGIN, body,
-- box, copy, COMMIT) a delivery held its box's row for three round trips, and every
-- delivery into that box waited for them; here the row is held for no round trip at all.
-- The body goes in before the box row is taken. A full box (the box row not updated)
-- rolls back and returns no row; a stored copy returns one row. Any error rolls the
-- transaction back before it reaches the client. PostgreSQL does the same with one
-- data-modifying WITH statement; SQLite takes deliveries together in one transaction.
-- Run with the caller's privileges (SQL SECURITY INVOKER): the daemons' user needs
-- EXECUTE on it, which its creator has.
CREATE PROCEDURE mmmail_deliver_one(IN p_size BIGINT, IN p_box VARCHAR(255), IN p_body_size BIGINT,
        IN p_created BIGINT, IN p_data LONGBLOB, IN p_uid VARCHAR(70), IN p_trace BLOB)
    MODIFIES SQL DATA SQL SECURITY INVOKER
    BEGIN
        DECLARE v_message BIGINT;
        DECLARE EXIT HANDLER FOR SQLEXCEPTION
        BEGIN
            ROLLBACK;
            RESIGNAL;
        END;
        START TRANSACTION;
        INSERT INTO message (message_size, message_created, message_data) VALUES (p_body_size, p_created, p_data);
        SET v_message = LAST_INSERT_ID();
        UPDATE box SET box_size = box_size + p_size, box_mails = box_mails + 1, box_in = CURRENT_TIMESTAMP
            WHERE box_address = p_box AND (box_max_mails = 0 OR box_mails < box_max_mails)
            AND (box_max_size = 0 OR box_size < box_max_size);
        IF ROW_COUNT() = 0 THEN
            ROLLBACK;
        ELSE
            INSERT INTO mail (mail_uid, mail_box, mail_message, mail_size, mail_created, mail_trace)
                VALUES (p_uid, p_box, v_message, p_size, p_created, p_trace);
            COMMIT;
            SELECT 1;
        END IF;
    END;
