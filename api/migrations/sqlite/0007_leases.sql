-- The job engine. A worker holds a running job under a lease it renews with heartbeats; every
-- claim starts a new generation, its token carries that generation, and a write from an older
-- one changes nothing (fencing), so a job started twice is not corrupted. Deadlines count from
-- the first start, in milliseconds. A running job from before this migration has no lease and
-- is failed as "worker lost" on start.
ALTER TABLE jobs ADD COLUMN lease_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN lease_expires_ms INTEGER;
ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN started_ms INTEGER;
ALTER TABLE jobs ADD COLUMN worker TEXT;
CREATE INDEX jobs_by_state ON jobs(state, seq);
ALTER TABLE tokens ADD COLUMN lease_generation INTEGER;
