-- Verification (docs/verification.md): what the project's own check found on the job's change
-- (the contract's `Verification` as JSON), once its worker ran it.
ALTER TABLE jobs ADD COLUMN verification_json TEXT;
