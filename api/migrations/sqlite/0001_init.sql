-- Initial schema of ckrv-api. Times are unix milliseconds (for comparisons) plus the RFC 3339
-- strings the API returns; secrets (device codes, tokens) are stored only as SHA-256 hashes.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    tier TEXT NOT NULL DEFAULT 'free',
    created_at TEXT NOT NULL
);

CREATE TABLE device_codes (
    device_code_hash TEXT PRIMARY KEY,
    user_code TEXT NOT NULL UNIQUE,
    account_id TEXT REFERENCES accounts(id),
    expires_ms INTEGER NOT NULL,
    last_poll_ms INTEGER,
    consumed INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('access', 'refresh', 'worker')),
    account_id TEXT REFERENCES accounts(id),
    job_id TEXT,
    -- A refresh token names the access token issued with it, so logout revokes both.
    pair_hash TEXT,
    expires_ms INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tokens_by_pair ON tokens(pair_hash);

CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    spec TEXT NOT NULL,
    spec_path TEXT NOT NULL,
    repo_url TEXT NOT NULL,
    base_branch TEXT NOT NULL,
    credential TEXT,
    status TEXT NOT NULL,
    phase TEXT NOT NULL,
    agent TEXT,
    feature_branch TEXT NOT NULL,
    result_json TEXT,
    error TEXT,
    has_diff INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX jobs_by_account ON jobs(account_id, seq DESC);
CREATE INDEX jobs_by_account_created ON jobs(account_id, created_ms);

CREATE TABLE logs (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    sequence INTEGER NOT NULL,
    timestamp TEXT NOT NULL,
    level TEXT NOT NULL,
    source TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (job_id, sequence)
);
