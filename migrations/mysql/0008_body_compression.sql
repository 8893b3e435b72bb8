-- On PostgreSQL this migration has message bodies and TMTP chunks compressed with LZ4.
-- This backend has no such setting; the migration keeps the file names of the three
-- backends identical (style.md P7).
SELECT 1;
