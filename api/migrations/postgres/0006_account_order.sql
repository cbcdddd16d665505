-- Accounts list in the order they were created (SQLite's 0006 gives its rows their rowid).
ALTER TABLE accounts ADD COLUMN created_ms BIGINT NOT NULL DEFAULT 0;
