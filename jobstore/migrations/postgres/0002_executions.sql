-- Execution claims: which worker may run a job's effects, and what they returned (PostgreSQL).

CREATE TABLE executions (
    key         text PRIMARY KEY,
    -- No foreign key: a claim may outlive its job row, and effects are keyed, not jobs.
    job_id      text COLLATE "C" NOT NULL,
    state       text NOT NULL CHECK (state IN ('pending', 'done')),
    result      jsonb,
    lease_until timestamptz NOT NULL,  -- until when a pending claimant holds the key
    expires_at  timestamptz NOT NULL   -- when the row stops counting: the lease end, or the result's ttl end once done
);

CREATE INDEX executions_expires_at ON executions (expires_at);

-- Deliveries of each job seen by workers; survives worker crashes.
ALTER TABLE jobs ADD COLUMN deliveries integer NOT NULL DEFAULT 0;
