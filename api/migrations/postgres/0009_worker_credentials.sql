-- Credentials of external workers (machines that claim jobs with `ckrv-orchestrator work`),
-- issued by an operator with `ckrv-api workers add NAME`; stored as SHA-256 hashes only.
CREATE TABLE worker_credentials (
    name TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL,
    last_claim_ms BIGINT
);
