-- The model gateway. A job's model token (by its hash) lets the job's agent call its model
-- APIs while the job runs under the claim the token was issued with; nothing revokes it, the
-- claim's end is its end. Each job counts what its agent spent through the gateway, and the
-- connections its egress policy refused.
CREATE TABLE model_tokens (
    token_hash TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    lease_generation INTEGER NOT NULL
);
CREATE INDEX model_tokens_by_job ON model_tokens (job_id);
ALTER TABLE jobs ADD COLUMN model_requests INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cost_micros INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN egress_refusals INTEGER NOT NULL DEFAULT 0;
