-- The SHA-256 of a finished job's archived log, recorded as it is written: every read of the
-- archive checks it, so a log changed in the artifact store is refused rather than served.
-- Logs archived before this column existed have none and are read unchecked.
ALTER TABLE jobs ADD COLUMN logs_sha256 TEXT;
