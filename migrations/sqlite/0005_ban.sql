-- Client addresses refused at connect until ban_until (epoch seconds), shared by every
-- daemon on the database (issue 13): an address (IPv6: its [limits] ipv6_prefix
-- network) that failed too many logins or probed too many unknown recipients.
CREATE TABLE ban (
    ban_address VARCHAR(64) NOT NULL PRIMARY KEY,
    ban_until   BIGINT      NOT NULL,
    ban_reason  VARCHAR(32) NOT NULL
);
