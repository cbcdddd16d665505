-- Worker tokens by their job and claim: a job's end revokes them, removing an external worker
-- revokes those of the jobs it holds, and the engine's reaper looks for a running job whose
-- current claim's token was revoked. Account tokens (no job) stay out of the index.
CREATE INDEX tokens_by_job ON tokens (job_id, lease_generation) WHERE job_id IS NOT NULL;
