-- mmmail schema, SQLite. The admin tables (user, box, alias, nofrom) keep the column
-- order of mmmail's README; SQLite has no NOW(), so admins write CURRENT_TIMESTAMP
-- (or datetime('now')) where MySQL takes NOW(). Our own tables use INTEGER epoch seconds.

CREATE TABLE "user" (
    user_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name    TEXT    NOT NULL UNIQUE,
    user_passwd  TEXT    NOT NULL DEFAULT '',
    user_created TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE box (
    box_address   TEXT    NOT NULL PRIMARY KEY,
    box_user      INTEGER NOT NULL REFERENCES "user" (user_id),
    box_max_size  INTEGER NOT NULL DEFAULT 0,
    box_size      INTEGER NOT NULL DEFAULT 0,
    box_max_mails INTEGER NOT NULL DEFAULT 0,
    box_mails     INTEGER NOT NULL DEFAULT 0,
    box_created   TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    box_in        TEXT    NULL,
    box_out       TEXT    NULL
);
CREATE INDEX box_user_key ON box (box_user);

CREATE TABLE alias (
    alias_pattern TEXT    NOT NULL,
    alias_box     TEXT    NOT NULL REFERENCES box (box_address)
                      ON DELETE CASCADE ON UPDATE CASCADE,
    alias_user    INTEGER NOT NULL DEFAULT 0,
    alias_created TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (alias_pattern, alias_box)
);
CREATE INDEX alias_box_key ON alias (alias_box);

CREATE TABLE nofrom (
    nofrom_pattern TEXT NOT NULL PRIMARY KEY
);

-- A message body, stored once however many boxes receive it.
CREATE TABLE message (
    message_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    message_size    INTEGER NOT NULL,
    message_created INTEGER NOT NULL,
    message_data    BLOB    NOT NULL
);

-- One row per (box, message): the maildrop entry. mail_uid is the POP3 UIDL;
-- mail_trace holds the per-recipient Return-Path:/Received: block prepended on retrieval.
CREATE TABLE mail (
    mail_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    mail_uid     TEXT    NOT NULL UNIQUE,
    mail_box     TEXT    NOT NULL REFERENCES box (box_address)
                     ON DELETE CASCADE ON UPDATE CASCADE,
    mail_message INTEGER NOT NULL REFERENCES message (message_id),
    mail_size    INTEGER NOT NULL,
    mail_created INTEGER NOT NULL,
    mail_trace   BLOB    NOT NULL
);
CREATE INDEX mail_box_key ON mail (mail_box, mail_id);
CREATE INDEX mail_message_key ON mail (mail_message);
