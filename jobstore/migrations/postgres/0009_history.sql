-- What the console's history needs (PostgreSQL): a job's trace, the steps of its life that its
-- row does not keep, and the circuit breakers' transitions.

-- The trace a job was submitted in (NULL: tracing was off).
ALTER TABLE jobs ADD COLUMN trace_id text;

-- Failed attempts, dead-letterings and replays; submitted, started and finished times are on
-- the job's row. A worker writes them in the transaction that ends the run; they go with their
-- job (the retention sweep's delete cascades).
CREATE TABLE job_events (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- insertion order
    job_id   text COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at       timestamptz NOT NULL,
    kind     text NOT NULL CHECK (kind IN ('retried', 'dead', 'replayed')),
    attempt  integer NOT NULL,
    error    text,
    took_ms  bigint,             -- how long the failed attempt ran (NULL: it never ran)
    delay_ms bigint,             -- retried: the wait before the next attempt
    tier     text,               -- retried: the delay tier it waits in
    reason   text,               -- dead: why; replayed: why it had died
    trace_id text
);

CREATE INDEX job_events_job_id ON job_events (job_id, id);

-- Every breaker transition as workers report them; the latest state stays in `breakers`.
-- Bounded: each write deletes what falls past the latest 1000.
CREATE TABLE breaker_changes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- insertion order
    group_name text NOT NULL,
    dependency text NOT NULL,
    worker     text NOT NULL,
    state      text NOT NULL,
    failures   integer NOT NULL,
    changed_at timestamptz NOT NULL
);

-- The overview counts the queued jobs by type and priority: from this index alone (an
-- index-only scan), a range per tenant, so it reads the queued jobs and not the whole table.
-- Type and priority never change, and a status change rewrites this index's entry anyway
-- (status is indexed, so no such update is HOT): no write costs more.
DROP INDEX jobs_tenant_status_id;
CREATE INDEX jobs_tenant_status_id ON jobs (tenant, status, id) INCLUDE (type, priority);
