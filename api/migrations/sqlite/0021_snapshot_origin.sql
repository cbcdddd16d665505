-- What `ckrv env list` shows of a snapshot besides its key: the repository whose setup it holds
-- and the job that saved it (empty for snapshots saved before this column).
ALTER TABLE snapshots ADD COLUMN repository TEXT NOT NULL DEFAULT '';
ALTER TABLE snapshots ADD COLUMN job_id TEXT NOT NULL DEFAULT '';
