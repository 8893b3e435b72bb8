-- On MySQL/MariaDB this migration adds the procedure that stores a delivery of one copy
-- in one round trip. This backend needs none (PostgreSQL delivers one copy in one
-- data-modifying WITH statement, SQLite in-process); the migration keeps the file names
-- of the three backends identical (style.md P7).
SELECT 1;
