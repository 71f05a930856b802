-- Execution claims: which worker may run a job's effects, and what they returned (SQLite).
-- Times are integer microseconds since the Unix epoch, UTC; result holds orjson text.

CREATE TABLE executions (
    key         TEXT PRIMARY KEY NOT NULL,
    -- No foreign key: a claim may outlive its job row, and effects are keyed, not jobs.
    job_id      TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    result      TEXT,
    lease_until INTEGER NOT NULL,  -- until when a pending claimant holds the key
    expires_at  INTEGER NOT NULL   -- when the row stops counting: the lease end, or the result's ttl end once done
);

CREATE INDEX executions_expires_at ON executions (expires_at);

-- Deliveries of each job seen by workers; survives worker crashes.
ALTER TABLE jobs ADD COLUMN deliveries INTEGER NOT NULL DEFAULT 0;
