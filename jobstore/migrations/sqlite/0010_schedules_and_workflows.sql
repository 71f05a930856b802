-- Schedules and workflows (SQLite). Times are integer microseconds since the epoch, UTC.

-- What the scheduler remembers of each schedule the topology declares: the due time of the
-- last occurrence it fired (and the job it made), when it started counting (occurrences at or
-- before `since` never fire: a new schedule does not catch up on its past, a resumed one not
-- on its pause), and whether an admin paused it.
CREATE TABLE schedules (
    name        TEXT PRIMARY KEY NOT NULL,
    since       INTEGER NOT NULL,
    last_due    INTEGER,
    last_job_id TEXT,
    paused_at   INTEGER,
    updated_at  INTEGER NOT NULL
);

-- A chain, group or chord of jobs. `pending` counts its steps (members, for a group or a
-- chord; its callback apart) not yet final, `failed` those that died; both change in the
-- transaction that records a step's end, so exactly one end sees `pending` reach 0.
CREATE TABLE workflows (
    id              TEXT PRIMARY KEY NOT NULL,  -- UUIDv7
    kind            TEXT NOT NULL CHECK (kind IN ('chain', 'group', 'chord')),
    status          TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    on_failure      TEXT NOT NULL CHECK (on_failure IN ('fail', 'continue')),
    tenant          TEXT NOT NULL,
    steps           INTEGER NOT NULL,
    pending         INTEGER NOT NULL,
    failed          INTEGER NOT NULL DEFAULT 0,
    error           TEXT,
    idempotency_key TEXT,
    request_hash    TEXT,
    correlation_id  TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    finished_at     INTEGER
);

-- A caller's key names one workflow of its tenant.
CREATE UNIQUE INDEX workflows_key ON workflows (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX workflows_tenant_id ON workflows (tenant, id);

-- Each step is an ordinary job; its row here says where it stands in its workflow, and
-- whether its end was counted (pending until its job's first final status).
CREATE TABLE workflow_steps (
    workflow_id TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('step', 'member', 'callback')),
    job_id      TEXT NOT NULL UNIQUE,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'dead', 'cancelled')),
    PRIMARY KEY (workflow_id, position)
);

-- The workflow a job is a step of: a worker's run window reads it with the job.
ALTER TABLE jobs ADD COLUMN workflow_id TEXT;
CREATE INDEX jobs_workflow_id ON jobs (workflow_id) WHERE workflow_id IS NOT NULL;
