-- A job's git credential goes to its worker once per claim: the lease generation it was last
-- handed to.
ALTER TABLE jobs ADD COLUMN credential_generation INTEGER;
