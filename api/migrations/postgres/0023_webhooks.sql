-- Webhooks (docs/webhooks.md): receivers of job events, an account's own or the operator's
-- (account_id NULL), and the durable outbox of their deliveries. A job's write and the
-- deliveries of its event are one transaction, so an event is never lost to a crash; the
-- sender works the outbox, in order per webhook and job, from any replica.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    account_id TEXT REFERENCES accounts(id),
    url TEXT NOT NULL,
    -- The events it takes, as ',job.queued,job.failed,' (or ',*,'), so one LIKE matches.
    events TEXT NOT NULL,
    -- The signing secret, sealed under the server's keys; after a rotation the previous one
    -- still signs until previous_until_ms.
    key_id TEXT NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    previous_key_id TEXT,
    previous_nonce BYTEA,
    previous_ciphertext BYTEA,
    previous_until_ms BIGINT,
    created_ms BIGINT NOT NULL
);
CREATE INDEX webhooks_by_account ON webhooks(account_id);

CREATE TABLE webhook_deliveries (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The webhook-id header: the same on every try.
    id TEXT NOT NULL UNIQUE,
    webhook_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    event TEXT NOT NULL,
    -- The job's state and phase when the event happened.
    job_state TEXT NOT NULL,
    job_phase TEXT NOT NULL,
    -- The body, written at the first try and sent unchanged on every later one.
    payload TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    tries BIGINT NOT NULL DEFAULT 0,
    next_try_ms BIGINT NOT NULL,
    lease_until_ms BIGINT,
    -- Tries go on until a day after this: the event, or the last `redeliver`.
    retry_from_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_try_ms);
CREATE INDEX webhook_deliveries_by_queue ON webhook_deliveries(webhook_id, job_id, seq);
CREATE INDEX webhook_deliveries_by_account ON webhook_deliveries(account_id, seq);

CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    status_code BIGINT,
    error TEXT,
    duration_ms BIGINT NOT NULL
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts(delivery_id, at_ms);
