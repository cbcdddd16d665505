-- Proven identity: accounts are created by an administrator (or an OpenID provider vouches for
-- them), people sign in on the web with a password, and /activate shows who asked for what.

ALTER TABLE accounts ADD COLUMN password_hash TEXT;
ALTER TABLE accounts ADD COLUMN is_admin INTEGER NOT NULL DEFAULT 0;
-- A disabled account's tokens and web sessions stop working at once.
ALTER TABLE accounts ADD COLUMN disabled_at TEXT;

-- What /activate shows about a pending request, and a person's refusal.
ALTER TABLE device_codes ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE device_codes ADD COLUMN requested_from TEXT NOT NULL DEFAULT '';
ALTER TABLE device_codes ADD COLUMN denied INTEGER NOT NULL DEFAULT 0;

-- Signed-in browsers. The cookie holds the id (signed); only its hash is stored.
CREATE TABLE web_sessions (
    id_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    -- The synchronizer token every form of the session carries.
    csrf_token TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);

-- One-time links that set an account's password; the first administrator's has no account yet.
CREATE TABLE setup_tokens (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT REFERENCES accounts(id),
    expires_ms INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
);

-- Tokens gain personal access tokens (named, listed and revoked by id) and refresh families:
-- refresh tokens rotate within a family, and presenting a used one revokes the family
-- (RFC 9700). SQLite cannot change a CHECK constraint, so the table is rebuilt.
CREATE TABLE tokens_v3 (
    token_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('access', 'refresh', 'worker', 'pat')),
    account_id TEXT REFERENCES accounts(id),
    job_id TEXT,
    -- A refresh token names the access token issued with it, so logout revokes both.
    pair_hash TEXT,
    expires_ms INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0,
    family TEXT,
    used_ms INTEGER,
    id TEXT,
    name TEXT,
    created_ms INTEGER
);
INSERT INTO tokens_v3 (token_hash, kind, account_id, job_id, pair_hash, expires_ms, revoked)
    SELECT token_hash, kind, account_id, job_id, pair_hash, expires_ms, revoked FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_v3 RENAME TO tokens;
CREATE INDEX tokens_by_pair ON tokens(pair_hash);
CREATE INDEX tokens_by_family ON tokens(family);
CREATE INDEX tokens_by_account ON tokens(account_id, kind);

-- The server's own settings, such as the public URL admin commands print links with.
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
