-- mmmail schema, MySQL/MariaDB. The admin tables (user, box, alias, nofrom) keep the
-- column order of mmmail's README so its positional INSERT statements work unchanged.
-- Timestamps are DATETIME (admins insert NOW()); our own tables use BIGINT epoch seconds.

CREATE TABLE user (
    user_id      BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_name    VARCHAR(255) NOT NULL,
    user_passwd  VARCHAR(255) NOT NULL DEFAULT '',
    user_created DATETIME     NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE KEY user_name_key (user_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE box (
    box_address   VARCHAR(255) NOT NULL PRIMARY KEY,
    box_user      BIGINT       NOT NULL,
    box_max_size  BIGINT       NOT NULL DEFAULT 0,
    box_size      BIGINT       NOT NULL DEFAULT 0,
    box_max_mails BIGINT       NOT NULL DEFAULT 0,
    box_mails     BIGINT       NOT NULL DEFAULT 0,
    box_created   DATETIME     NOT NULL DEFAULT CURRENT_TIMESTAMP,
    box_in        DATETIME     NULL DEFAULT NULL,
    box_out       DATETIME     NULL DEFAULT NULL,
    KEY box_user_key (box_user),
    CONSTRAINT box_user_fk FOREIGN KEY (box_user) REFERENCES user (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE alias (
    alias_pattern VARCHAR(255) NOT NULL,
    alias_box     VARCHAR(255) NOT NULL,
    alias_user    BIGINT       NOT NULL DEFAULT 0,
    alias_created DATETIME     NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (alias_pattern, alias_box),
    KEY alias_box_key (alias_box),
    CONSTRAINT alias_box_fk FOREIGN KEY (alias_box) REFERENCES box (box_address)
        ON DELETE CASCADE ON UPDATE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE nofrom (
    nofrom_pattern VARCHAR(255) NOT NULL PRIMARY KEY
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A message body, stored once however many boxes receive it.
CREATE TABLE message (
    message_id      BIGINT   NOT NULL AUTO_INCREMENT PRIMARY KEY,
    message_size    BIGINT   NOT NULL,
    message_created BIGINT   NOT NULL,
    message_data    LONGBLOB NOT NULL
) ENGINE=InnoDB;

-- One row per (box, message): the maildrop entry. mail_uid is the POP3 UIDL;
-- mail_trace holds the per-recipient Return-Path:/Received: block prepended on retrieval.
CREATE TABLE mail (
    mail_id      BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    mail_uid     VARCHAR(70)  NOT NULL,
    mail_box     VARCHAR(255) NOT NULL,
    mail_message BIGINT       NOT NULL,
    mail_size    BIGINT       NOT NULL,
    mail_created BIGINT       NOT NULL,
    mail_trace   BLOB         NOT NULL,
    UNIQUE KEY mail_uid_key (mail_uid),
    KEY mail_box_key (mail_box, mail_id),
    KEY mail_message_key (mail_message),
    CONSTRAINT mail_box_fk FOREIGN KEY (mail_box) REFERENCES box (box_address)
        ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT mail_message_fk FOREIGN KEY (mail_message) REFERENCES message (message_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
