-- Tenants and API keys (PostgreSQL).
-- Every job belongs to a tenant; credentials see only their tenant's jobs, so every listing
-- filters by tenant first and the listing indexes lead with it.

ALTER TABLE jobs ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT 'default';

DROP INDEX jobs_status_id;
DROP INDEX jobs_type_id;
CREATE INDEX jobs_tenant_id ON jobs (tenant, id);
CREATE INDEX jobs_tenant_status_id ON jobs (tenant, status, id);
CREATE INDEX jobs_tenant_type_id ON jobs (tenant, type, id);

-- API keys: the secret is never stored, only its keyed hash (HMAC-SHA256), looked up by id.
CREATE TABLE api_keys (
    id           text COLLATE "C" PRIMARY KEY,  -- the public part of the key (tq_<id>_<secret>)
    name         text NOT NULL,
    secret_hash  bytea NOT NULL,
    tenant       text COLLATE "C" NOT NULL,
    scopes       text NOT NULL,  -- space-separated
    job_types    text,           -- space-separated patterns; NULL: every job type
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
