-- Box addresses are stored in lowercase (design.md "Schema"): mail is looked up by the
-- lowercased recipient, so a box inserted as 'Bob@Corp.Test' would never receive mail
-- nor log in. Triggers refuse new and changed rows (a CHECK constraint would also
-- reject the upgrade of a database that already holds such a row; those are reported
-- by the daemons at start and by --check-config instead).
CREATE TRIGGER box_address_lowercase_insert BEFORE INSERT ON box FOR EACH ROW
    IF BINARY NEW.box_address <> BINARY LOWER(NEW.box_address) THEN
        SIGNAL SQLSTATE '23000' SET MESSAGE_TEXT = 'box_address must be lowercase';
    END IF;
CREATE TRIGGER box_address_lowercase_update BEFORE UPDATE ON box FOR EACH ROW
    IF BINARY NEW.box_address <> BINARY LOWER(NEW.box_address) THEN
        SIGNAL SQLSTATE '23000' SET MESSAGE_TEXT = 'box_address must be lowercase';
    END IF;
