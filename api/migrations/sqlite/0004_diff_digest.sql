-- The SHA-256 of the diff bytes the worker uploaded: `ckrv pull` checks it before applying, so
-- a diff changed in storage or on the way is refused.
ALTER TABLE jobs ADD COLUMN diff_sha256 TEXT;
