-- Connections the API's egress proxy (for job pods on Kubernetes) refused a job's agent, kept
-- until the job's worker takes them with its next heartbeat and logs them: the log's lines are
-- numbered by the worker alone.
CREATE TABLE egress_notices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    message TEXT NOT NULL
);
CREATE INDEX egress_notices_by_job ON egress_notices (job_id, id);
