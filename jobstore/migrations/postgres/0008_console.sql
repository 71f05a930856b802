-- What the web console needs (PostgreSQL): an audit of dead-letter replays and purges, and a
-- search of a tenant's jobs by correlation id.

-- One row per replay or purge, written when it starts (matched NULL) and again when it ends,
-- so an operation that died halfway still shows who started it.
CREATE TABLE dlq_audit (
    id          text COLLATE "C" PRIMARY KEY,  -- UUIDv7: id order is start order
    at          timestamptz NOT NULL,
    actor       text NOT NULL,                 -- the credential's id (key:<id>, jwt:<issuer>:<subject>)
    actor_name  text NOT NULL,                 -- the key's name, or the token's subject
    tenant      text COLLATE "C" NOT NULL,
    group_name  text COLLATE "C" NOT NULL,     -- "group" is an SQL keyword
    action      text NOT NULL CHECK (action IN ('replay', 'purge')),
    target      text NOT NULL,                 -- which dead letters: the filter as given
    rate        double precision,              -- replays per second (a replay only)
    matched     integer,                       -- NULL until it ended
    kept        integer,
    error       text,
    finished_at timestamptz
);

CREATE INDEX dlq_audit_tenant_group_id ON dlq_audit (tenant, group_name, id);

-- Only jobs that carry a correlation id are in it; the search is a range of it, newest first.
CREATE INDEX jobs_tenant_correlation_id ON jobs (tenant, correlation_id, id)
    WHERE correlation_id IS NOT NULL;
