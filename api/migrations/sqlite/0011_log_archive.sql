-- Finished jobs' logs move to the artifact store as JSON lines. `logs_archived_at` says the
-- archive is written and is what readers use; the rows stay a while longer for readers that
-- started before, then go (`log_rows_purged_at`).
ALTER TABLE jobs ADD COLUMN logs_archived_at TEXT;
ALTER TABLE jobs ADD COLUMN log_rows_purged_at TEXT;
-- Small indexes over the few jobs with archiving to do, so a pass costs nothing with a
-- million jobs stored.
CREATE INDEX jobs_logs_to_archive ON jobs (seq)
    WHERE completed_at IS NOT NULL AND logs_archived_at IS NULL AND expired_at IS NULL;
CREATE INDEX jobs_log_rows_to_purge ON jobs (logs_archived_at)
    WHERE logs_archived_at IS NOT NULL AND log_rows_purged_at IS NULL;
