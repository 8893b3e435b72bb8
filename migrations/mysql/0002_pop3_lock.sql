-- Maildrop locks of POP3 sessions as leases, so that one box has one session at a time
-- across processes and hosts (RFC 1939 §8 exclusive-access lock). A lease whose
-- lock_expires (epoch seconds) has passed may be taken over.
CREATE TABLE pop3_lock (
    lock_box     VARCHAR(255) NOT NULL PRIMARY KEY,
    lock_owner   VARCHAR(64)  NOT NULL,
    lock_expires BIGINT       NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
