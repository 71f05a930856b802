-- Tenants and API keys (SQLite).
-- Every job belongs to a tenant; credentials see only their tenant's jobs, so every listing
-- filters by tenant first and the listing indexes lead with it.

ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';

DROP INDEX jobs_status_id;
DROP INDEX jobs_type_id;
CREATE INDEX jobs_tenant_id ON jobs (tenant, id);
CREATE INDEX jobs_tenant_status_id ON jobs (tenant, status, id);
CREATE INDEX jobs_tenant_type_id ON jobs (tenant, type, id);

-- API keys: the secret is never stored, only its keyed hash (HMAC-SHA256), looked up by id.
-- Times are integer microseconds since the Unix epoch, UTC.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,  -- the public part of the key (tq_<id>_<secret>)
    name         TEXT NOT NULL,
    secret_hash  BLOB NOT NULL,
    tenant       TEXT NOT NULL,
    scopes       TEXT NOT NULL,  -- space-separated
    job_types    TEXT,           -- space-separated patterns; NULL: every job type
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER
);
