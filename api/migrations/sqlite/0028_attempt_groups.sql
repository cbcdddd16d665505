-- Attempt groups (docs/attempts.md): several attempts at one spec, each an ordinary job that
-- names its group and its number in it.
CREATE TABLE job_groups (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    stop_at_first_verified INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX job_groups_account_id ON job_groups (account_id);
ALTER TABLE jobs ADD COLUMN group_id TEXT;
ALTER TABLE jobs ADD COLUMN attempt INTEGER;
CREATE INDEX jobs_group_id ON jobs (group_id);
