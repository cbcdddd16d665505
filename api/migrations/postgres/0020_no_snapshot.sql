-- A job submitted with --no-snapshot: its setup runs afresh (no snapshot is restored; the new
-- one is saved).
ALTER TABLE jobs ADD COLUMN no_snapshot INTEGER NOT NULL DEFAULT 0;
