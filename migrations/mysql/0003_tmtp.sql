-- TMTP (mmtmtpd, spec/tmtp.md §10): accounts, their nodes (devices), aliases, groups,
-- and the store-and-forward queue. A message is kept until every recipient node has
-- acknowledged it; its bytes are written in chunks as they arrive and become
-- deliverable only when the transaction that queues it commits.
CREATE TABLE tmtp_user (
    tmtp_uid     VARCHAR(64)  NOT NULL PRIMARY KEY,
    tmtp_created BIGINT       NOT NULL,
    -- OpenID Connect identity at registration (JSON), NULL without one.
    tmtp_auth    TEXT         NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE tmtp_node (
    node_uid     VARCHAR(64)  NOT NULL,
    node_num     BIGINT  NOT NULL,
    -- base32 of SHA-256 applied 22389 times to the node secret (spec §10.2).
    node_hash    VARCHAR(64)  NOT NULL UNIQUE,
    node_defunct BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (node_uid, node_num)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE tmtp_alias (
    alias_name VARCHAR(255) NOT NULL PRIMARY KEY,
    alias_uid  VARCHAR(64)  NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX tmtp_alias_uid ON tmtp_alias (alias_uid);
-- A group exists while it has member rows; status 1 invited, 2 joined, 3 barred.
CREATE TABLE tmtp_member (
    member_gid    VARCHAR(255) NOT NULL,
    member_uid    VARCHAR(64)  NOT NULL,
    member_alias  VARCHAR(255) NOT NULL,
    member_status BIGINT  NOT NULL,
    PRIMARY KEY (member_gid, member_uid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
-- message_header: the frame's length digits and JSON header, sent before the data.
-- message_ready = 0 while its data is still arriving (left over after a crash: removed
-- at start).
CREATE TABLE tmtp_message (
    message_id      BIGINT  NOT NULL PRIMARY KEY,
    message_header  BLOB    NULL,
    message_size    BIGINT  NOT NULL DEFAULT 0,
    message_ready   BIGINT  NOT NULL DEFAULT 0,
    message_created BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE tmtp_chunk (
    chunk_message BIGINT  NOT NULL,
    chunk_seq     BIGINT  NOT NULL,
    chunk_data    LONGBLOB NOT NULL,
    PRIMARY KEY (chunk_message, chunk_seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
-- One row per recipient node and pending message; prio 'E' (UserEdit results) is
-- delivered before 'M' (everything else), then by message id (spec §4.5).
CREATE TABLE tmtp_queue (
    queue_uid     VARCHAR(64) NOT NULL,
    queue_num     BIGINT  NOT NULL,
    queue_prio    CHAR(1)     NOT NULL,
    queue_message BIGINT  NOT NULL,
    PRIMARY KEY (queue_uid, queue_num, queue_prio, queue_message)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX tmtp_queue_message ON tmtp_queue (queue_message);
