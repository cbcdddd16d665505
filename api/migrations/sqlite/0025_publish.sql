-- Publishing a job's result (docs/publish.md): how the job publishes (`none`, `branch`, `pr`,
-- `draft-pr`), and where it was published once it was (the contract's `Publication` as JSON).
ALTER TABLE jobs ADD COLUMN publish TEXT NOT NULL DEFAULT 'none';
ALTER TABLE jobs ADD COLUMN publication_json TEXT;
