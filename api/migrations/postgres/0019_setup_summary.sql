-- What a job's setup did (a snapshot restored, or the script run and perhaps saved), as its
-- worker reported it: the JSON of the contract's SetupSummary.
ALTER TABLE jobs ADD COLUMN setup_json TEXT;
