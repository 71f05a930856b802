-- Jobs and submission idempotency keys (PostgreSQL).

CREATE TABLE jobs (
    -- UUIDv7 as text, so ids that are not UUIDs still work; the "C" collation compares
    -- bytes, so id order is creation order whatever the database's locale.
    id              text COLLATE "C" PRIMARY KEY,
    type            text NOT NULL,
    status          text NOT NULL,
    priority        text NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    payload         jsonb,
    payload_ref     jsonb,
    attempts        integer NOT NULL DEFAULT 0,
    max_attempts    integer,
    idempotency_key text,
    correlation_id  text,
    callback_url    text,
    not_before      timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    last_error      text,
    result          jsonb
);

-- Listings filter by one column and page by id, newest first.
CREATE INDEX jobs_status_id ON jobs (status, id);
CREATE INDEX jobs_type_id ON jobs (type, id);

CREATE TABLE idempotency_keys (
    key          text PRIMARY KEY,
    request_hash text NOT NULL,
    -- Deferred so a claim can name the job its transaction inserts next.
    job_id       text COLLATE "C" NOT NULL
                 REFERENCES jobs (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    state        text NOT NULL CHECK (state IN ('pending', 'done')),
    response     bytea,
    lease_until  timestamptz NOT NULL,  -- until when a pending claimant holds the key
    expires_at   timestamptz NOT NULL   -- when the row stops counting: the lease end, or the replay window end once done
);

CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
CREATE INDEX idempotency_keys_job_id ON idempotency_keys (job_id);
