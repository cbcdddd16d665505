-- Accounts list in the order they were created, on every database: PostgreSQL has no rowid,
-- so creation gets a millisecond time of its own. Existing rows keep their rowid order.
ALTER TABLE accounts ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0;
UPDATE accounts SET created_ms = rowid;
