-- Greylisting (issue 14), shared by every mmsmtpd on the database: one row per triplet
-- (client network, reverse-path, forward-path), keyed by the SHA-256 of the three in hex.
-- grey_first: when the triplet was first refused (epoch seconds); grey_last: when it was
-- last seen; grey_passed: when a retry after the delay passed it (0 = not yet).
CREATE TABLE greylist (
    grey_key    VARCHAR(64) NOT NULL PRIMARY KEY,
    grey_net    VARCHAR(64) NOT NULL,
    grey_first  BIGINT      NOT NULL,
    grey_last   BIGINT      NOT NULL,
    grey_passed BIGINT      NOT NULL
);
CREATE INDEX greylist_last ON greylist (grey_last);
