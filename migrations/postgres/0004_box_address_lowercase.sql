-- Box addresses are stored in lowercase (design.md "Schema"): mail is looked up by the
-- lowercased recipient, so a box inserted as 'Bob@Corp.Test' would never receive mail
-- nor log in. New and changed rows are checked; rows already there are not (NOT VALID)
-- and are reported by the daemons at start and by --check-config.
ALTER TABLE box ADD CONSTRAINT box_address_lowercase
    CHECK (box_address = LOWER(box_address)) NOT VALID;
