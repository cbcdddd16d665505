-- The seed contract's names and shapes (cloud-api.yaml): job columns take the contract's field
-- names, accounts gain a display name and the `enterprise` tier, device codes remember the
-- client that asked for them, and git credentials are stored, encrypted.

ALTER TABLE accounts ADD COLUMN name TEXT NOT NULL DEFAULT '';
UPDATE accounts SET name = substr(email, 1, instr(email, '@') - 1) WHERE name = '';
UPDATE accounts SET tier = 'enterprise' WHERE tier = 'team';

ALTER TABLE device_codes ADD COLUMN client_id TEXT NOT NULL DEFAULT '';

ALTER TABLE jobs RENAME COLUMN repo_url TO git_repo_url;
ALTER TABLE jobs RENAME COLUMN base_branch TO git_base_branch;
ALTER TABLE jobs RENAME COLUMN credential TO git_credential_name;
ALTER TABLE jobs RENAME COLUMN feature_branch TO feature_branch_name;
-- Every state of the job's life, `cancelled` included; the contract's `status` is derived.
ALTER TABLE jobs RENAME COLUMN status TO state;
ALTER TABLE jobs RENAME COLUMN error TO error_message;
ALTER TABLE jobs RENAME COLUMN finished_at TO completed_at;
ALTER TABLE jobs RENAME COLUMN result_json TO diff_stats_json;
-- The contract's JobCreate has no spec path: it becomes optional.
ALTER TABLE jobs ADD COLUMN spec_path_given TEXT;
UPDATE jobs SET spec_path_given = NULLIF(spec_path, '');
ALTER TABLE jobs DROP COLUMN spec_path;
ALTER TABLE jobs RENAME COLUMN spec_path_given TO spec_path;
CREATE INDEX jobs_by_account_state ON jobs(account_id, state, seq DESC);

CREATE TABLE credentials (
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    provider TEXT NOT NULL,
    credential_type TEXT NOT NULL,
    -- The value, sealed with XChaCha20-Poly1305 under the server key `key_id`, with the
    -- account and the name as associated data: a row copied elsewhere does not open.
    key_id TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    PRIMARY KEY (account_id, name)
);
