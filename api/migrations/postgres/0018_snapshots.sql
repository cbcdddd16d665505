-- Snapshots of repositories' setups (.ckrv/environment.toml), by account: the archive is in
-- the artifact store under snapshots/ACCOUNT/KEY; a job restores only its own account's.
CREATE TABLE snapshots (
    account_id TEXT NOT NULL REFERENCES accounts(id),
    snapshot_key TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    used_ms BIGINT NOT NULL,
    PRIMARY KEY (account_id, snapshot_key)
);
CREATE INDEX snapshots_by_use ON snapshots (account_id, used_ms);
