-- The job engine's leases, generations and deadlines (see SQLite's 0007).
ALTER TABLE jobs ADD COLUMN lease_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN lease_expires_ms BIGINT;
ALTER TABLE jobs ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN started_ms BIGINT;
ALTER TABLE jobs ADD COLUMN worker TEXT;
CREATE INDEX jobs_by_state ON jobs(state, seq);
ALTER TABLE tokens ADD COLUMN lease_generation BIGINT;
