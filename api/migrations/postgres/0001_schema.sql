-- The schema of ckrv-api on PostgreSQL, equal to SQLite's after its migrations 0001–0005; later
-- migrations carry the same number in both directories. Times are unix milliseconds (for
-- comparisons) plus the RFC 3339 strings the API returns; flags are 0/1 integers and every
-- integer is BIGINT, so one set of statements reads both databases. Secrets (device codes,
-- tokens) are stored only as SHA-256 hashes.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    tier TEXT NOT NULL DEFAULT 'free',
    created_at TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    password_hash TEXT,
    is_admin BIGINT NOT NULL DEFAULT 0,
    disabled_at TEXT
);

CREATE TABLE device_codes (
    device_code_hash TEXT PRIMARY KEY,
    user_code TEXT NOT NULL UNIQUE,
    account_id TEXT REFERENCES accounts(id),
    expires_ms BIGINT NOT NULL,
    last_poll_ms BIGINT,
    consumed BIGINT NOT NULL DEFAULT 0,
    client_id TEXT NOT NULL DEFAULT '',
    created_ms BIGINT NOT NULL DEFAULT 0,
    requested_from TEXT NOT NULL DEFAULT '',
    denied BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('access', 'refresh', 'worker', 'pat')),
    account_id TEXT REFERENCES accounts(id),
    job_id TEXT,
    pair_hash TEXT,
    expires_ms BIGINT,
    revoked BIGINT NOT NULL DEFAULT 0,
    family TEXT,
    used_ms BIGINT,
    id TEXT,
    name TEXT,
    created_ms BIGINT
);
CREATE INDEX tokens_by_pair ON tokens(pair_hash);
CREATE INDEX tokens_by_family ON tokens(family);
CREATE INDEX tokens_by_account ON tokens(account_id, kind);

CREATE TABLE jobs (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    spec TEXT NOT NULL,
    spec_path TEXT,
    git_repo_url TEXT NOT NULL,
    git_base_branch TEXT NOT NULL,
    git_credential_name TEXT,
    state TEXT NOT NULL,
    phase TEXT NOT NULL,
    agent TEXT,
    feature_branch_name TEXT NOT NULL,
    diff_stats_json TEXT,
    error_message TEXT,
    has_diff BIGINT NOT NULL DEFAULT 0,
    diff_sha256 TEXT,
    created_ms BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    started_at TEXT,
    completed_at TEXT
);
CREATE INDEX jobs_by_account ON jobs(account_id, seq DESC);
CREATE INDEX jobs_by_account_created ON jobs(account_id, created_ms);
CREATE INDEX jobs_by_account_state ON jobs(account_id, state, seq DESC);

CREATE TABLE logs (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    sequence BIGINT NOT NULL,
    timestamp TEXT NOT NULL,
    level TEXT NOT NULL,
    source TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (job_id, sequence)
);

CREATE TABLE credentials (
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    provider TEXT NOT NULL,
    credential_type TEXT NOT NULL,
    key_id TEXT NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    PRIMARY KEY (account_id, name)
);

CREATE TABLE web_sessions (
    id_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    csrf_token TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);

CREATE TABLE setup_tokens (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT REFERENCES accounts(id),
    expires_ms BIGINT NOT NULL,
    used BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE sso_logins (
    state_hash TEXT PRIMARY KEY,
    nonce TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    next TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
