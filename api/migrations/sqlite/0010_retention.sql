-- Retention: a finished job's diff and log are removed once it is older than the configured
-- retention; the job itself stays, and says when its results expired.
ALTER TABLE jobs ADD COLUMN expired_at TEXT;
