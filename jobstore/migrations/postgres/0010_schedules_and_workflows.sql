-- Schedules and workflows (PostgreSQL).

-- What the scheduler remembers of each schedule the topology declares: the due time of the
-- last occurrence it fired (and the job it made), when it started counting (occurrences at or
-- before `since` never fire: a new schedule does not catch up on its past, a resumed one not
-- on its pause), and whether an admin paused it.
CREATE TABLE schedules (
    name        text PRIMARY KEY,
    since       timestamptz NOT NULL,
    last_due    timestamptz,
    last_job_id text,
    paused_at   timestamptz,
    updated_at  timestamptz NOT NULL
);

-- A chain, group or chord of jobs. `pending` counts its steps (members, for a group or a
-- chord; its callback apart) not yet final, `failed` those that died; both change in the
-- transaction that records a step's end, under the workflow's row lock, so exactly one end
-- sees `pending` reach 0.
CREATE TABLE workflows (
    id              text COLLATE "C" PRIMARY KEY,  -- UUIDv7
    kind            text NOT NULL CHECK (kind IN ('chain', 'group', 'chord')),
    status          text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    on_failure      text NOT NULL CHECK (on_failure IN ('fail', 'continue')),
    tenant          text NOT NULL,
    steps           integer NOT NULL,
    pending         integer NOT NULL,
    failed          integer NOT NULL DEFAULT 0,
    error           text,
    idempotency_key text,
    request_hash    text,
    correlation_id  text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    finished_at     timestamptz
);

-- A caller's key names one workflow of its tenant.
CREATE UNIQUE INDEX workflows_key ON workflows (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX workflows_tenant_id ON workflows (tenant, id);

-- Each step is an ordinary job; its row here says where it stands in its workflow, and
-- whether its end was counted (pending until its job's first final status).
CREATE TABLE workflow_steps (
    workflow_id text COLLATE "C" NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    position    integer NOT NULL,
    role        text NOT NULL CHECK (role IN ('step', 'member', 'callback')),
    job_id      text COLLATE "C" NOT NULL UNIQUE,
    status      text NOT NULL CHECK (status IN ('pending', 'succeeded', 'dead', 'cancelled')),
    PRIMARY KEY (workflow_id, position)
);

-- The workflow a job is a step of: a worker's run window reads it with the job.
ALTER TABLE jobs ADD COLUMN workflow_id text COLLATE "C";
CREATE INDEX jobs_workflow_id ON jobs (workflow_id) WHERE workflow_id IS NOT NULL;
