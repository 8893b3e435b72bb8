-- Box addresses are stored in lowercase (design.md "Schema"): mail is looked up by the
-- lowercased recipient, so a box inserted as 'Bob@Corp.Test' would never receive mail
-- nor log in. Triggers refuse new and changed rows; rows already there are reported by
-- the daemons at start and by --check-config. SQLite's LOWER() folds ASCII letters only.
CREATE TRIGGER box_address_lowercase_insert BEFORE INSERT ON box
    WHEN NEW.box_address <> LOWER(NEW.box_address)
BEGIN
    SELECT RAISE(ABORT, 'box_address must be lowercase');
END;
CREATE TRIGGER box_address_lowercase_update BEFORE UPDATE OF box_address ON box
    WHEN NEW.box_address <> LOWER(NEW.box_address)
BEGIN
    SELECT RAISE(ABORT, 'box_address must be lowercase');
END;
