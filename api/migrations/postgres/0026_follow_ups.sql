-- Follow-ups (docs/follow-ups.md): the job a job continues, found both ways.
ALTER TABLE jobs ADD COLUMN parent_id TEXT;
CREATE INDEX jobs_parent_id ON jobs (parent_id);
