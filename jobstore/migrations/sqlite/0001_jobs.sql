-- Jobs and submission idempotency keys (SQLite).
-- Times are integer microseconds since the Unix epoch, UTC: exact round trips and plain
-- integer comparisons. JSON columns hold orjson text.

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY NOT NULL,  -- UUIDv7, so id order is creation order
    type            TEXT NOT NULL,
    status          TEXT NOT NULL,
    priority        TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    payload         TEXT,
    payload_ref     TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER,
    idempotency_key TEXT,
    correlation_id  TEXT,
    callback_url    TEXT,
    not_before      INTEGER,
    started_at      INTEGER,
    finished_at     INTEGER,
    last_error      TEXT,
    result          TEXT
);

-- Listings filter by one column and page by id, newest first.
CREATE INDEX jobs_status_id ON jobs (status, id);
CREATE INDEX jobs_type_id ON jobs (type, id);

CREATE TABLE idempotency_keys (
    key          TEXT PRIMARY KEY NOT NULL,
    request_hash TEXT NOT NULL,
    -- Deferred so a claim can name the job its transaction inserts next.
    job_id       TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    response     BLOB,
    lease_until  INTEGER NOT NULL,  -- until when a pending claimant holds the key
    expires_at   INTEGER NOT NULL   -- when the row stops counting: the lease end, or the replay window end once done
);

CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
CREATE INDEX idempotency_keys_job_id ON idempotency_keys (job_id);
