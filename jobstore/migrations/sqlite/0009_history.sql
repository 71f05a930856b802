-- What the console's history needs (SQLite): a job's trace, the steps of its life that its row
-- does not keep, and the circuit breakers' transitions. Times are integer microseconds since
-- the epoch, UTC.

-- The trace a job was submitted in (NULL: tracing was off).
ALTER TABLE jobs ADD COLUMN trace_id TEXT;

-- Failed attempts, dead-letterings and replays; submitted, started and finished times are on
-- the job's row. A worker writes them in the transaction that ends the run; they go with their
-- job (the retention sweep's delete cascades).
CREATE TABLE job_events (
    id       INTEGER PRIMARY KEY,  -- insertion order
    job_id   TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at       INTEGER NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('retried', 'dead', 'replayed')),
    attempt  INTEGER NOT NULL,
    error    TEXT,
    took_ms  INTEGER,              -- how long the failed attempt ran (NULL: it never ran)
    delay_ms INTEGER,              -- retried: the wait before the next attempt
    tier     TEXT,                 -- retried: the delay tier it waits in
    reason   TEXT,                 -- dead: why; replayed: why it had died
    trace_id TEXT
);

CREATE INDEX job_events_job_id ON job_events (job_id, id);

-- Every breaker transition as workers report them; the latest state stays in `breakers`.
-- Bounded: each write deletes what falls past the latest 1000.
CREATE TABLE breaker_changes (
    id         INTEGER PRIMARY KEY,  -- insertion order
    group_name TEXT NOT NULL,
    dependency TEXT NOT NULL,
    worker     TEXT NOT NULL,
    state      TEXT NOT NULL,
    failures   INTEGER NOT NULL,
    changed_at INTEGER NOT NULL
);

-- The overview counts the queued jobs by type and priority: from this index alone (covering),
-- a range per tenant, so it reads the queued jobs and not the whole table. Type and priority
-- never change, and a status change rewrites this index's entry anyway: no write costs more.
DROP INDEX jobs_tenant_status_id;
CREATE INDEX jobs_tenant_status_id ON jobs (tenant, status, id, type, priority);
