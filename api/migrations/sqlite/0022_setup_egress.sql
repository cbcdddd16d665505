-- The egress policy a job's setup runs under, as its worker reports it with phase `setup`: the
-- API's egress proxy for job pods applies it while the job is in that phase.
ALTER TABLE jobs ADD COLUMN setup_egress TEXT;
