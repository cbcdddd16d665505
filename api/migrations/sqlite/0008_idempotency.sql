-- Idempotency-Key on POST /v1/jobs: the first request with a key claims it (job_id still
-- empty), and its job is recorded when made; a retry with the same key and body gets that job,
-- another body is refused. Keys are forgotten a day after they were first used.
CREATE TABLE idempotency_keys (
    account_id TEXT NOT NULL REFERENCES accounts(id),
    idempotency_key TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    job_id TEXT REFERENCES jobs(id),
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (account_id, idempotency_key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys(created_ms);
