-- A worker's claim to run a job lives on the job's row, keyed by the job id: a key no caller
-- chooses, so two submissions can never share (or block) one claim. claim_until: until when
-- the run that last started the job holds it (integer microseconds since the epoch, UTC); the
-- delivery count it started with tells that run apart from a later one. The separate table of
-- claims keyed by idempotency key goes: finishing a run is now one update of the job's row.
ALTER TABLE jobs ADD COLUMN claim_until INTEGER;
DROP TABLE executions;
