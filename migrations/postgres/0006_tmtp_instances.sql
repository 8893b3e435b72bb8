-- Several mmtmtpd instances on one database (issue 19).
-- A node's link, wherever it is: one row per connected node, held by an instance as a
-- lease that instance renews while the node stays connected. A second login of the node
-- on any instance is refused while the lease (link_expires, epoch seconds) holds; an
-- instance that dies stops renewing, and its nodes are free when their leases run out.
CREATE TABLE tmtp_link (
    link_uid      VARCHAR(255) NOT NULL,
    link_num      BIGINT       NOT NULL,
    link_instance VARCHAR(64)  NOT NULL,
    -- Which of the instance's links holds it (a new link of the same node replaces it).
    link_token    BIGINT       NOT NULL,
    link_expires  BIGINT       NOT NULL,
    PRIMARY KEY (link_uid, link_num)
);
CREATE INDEX tmtp_link_instance ON tmtp_link (link_instance);
-- Work for a node connected to another instance: its queue has a new message (wake_frame
-- NULL), or a frame to write to every node of wake_uid there (an ohi note, wake_num 0).
-- The instance reads and deletes its rows when told (LISTEN/NOTIFY on PostgreSQL) or at
-- its poll; rows older than a minute (an instance that died) are removed.
CREATE TABLE tmtp_wake (
    wake_id       BIGSERIAL    NOT NULL PRIMARY KEY,
    wake_instance VARCHAR(64)  NOT NULL,
    wake_uid      VARCHAR(255) NOT NULL,
    wake_num      BIGINT       NOT NULL,
    wake_frame    BYTEA        NULL,
    wake_created  BIGINT       NOT NULL
);
CREATE INDEX tmtp_wake_instance ON tmtp_wake (wake_instance, wake_id);
-- Message ids handed out in blocks, so that every instance's ids are unique whatever its
-- clock: an instance takes [block_next, block_next + size) after raising block_next to at
-- least its clock in nanoseconds (spec/tmtp.md §4.4).
CREATE TABLE tmtp_idblock (
    block_key  BIGINT NOT NULL PRIMARY KEY,
    block_next BIGINT NOT NULL
);
INSERT INTO tmtp_idblock (block_key, block_next) VALUES (1, 0);
