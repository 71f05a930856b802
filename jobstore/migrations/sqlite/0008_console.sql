-- What the web console needs (SQLite): an audit of dead-letter replays and purges, and a
-- search of a tenant's jobs by correlation id. Times are integer microseconds since the epoch.

-- One row per replay or purge, written when it starts (matched NULL) and again when it ends,
-- so an operation that died halfway still shows who started it.
CREATE TABLE dlq_audit (
    id          TEXT PRIMARY KEY NOT NULL,  -- UUIDv7: id order is start order
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,              -- the credential's id (key:<id>, jwt:<issuer>:<subject>)
    actor_name  TEXT NOT NULL,              -- the key's name, or the token's subject
    tenant      TEXT NOT NULL,
    group_name  TEXT NOT NULL,              -- "group" is an SQL keyword
    action      TEXT NOT NULL CHECK (action IN ('replay', 'purge')),
    target      TEXT NOT NULL,              -- which dead letters: the filter as given
    rate        REAL,                       -- replays per second (a replay only)
    matched     INTEGER,                    -- NULL until it ended
    kept        INTEGER,
    error       TEXT,
    finished_at INTEGER
);

CREATE INDEX dlq_audit_tenant_group_id ON dlq_audit (tenant, group_name, id);

-- Only jobs that carry a correlation id are in it; the search is a range of it, newest first.
CREATE INDEX jobs_tenant_correlation_id ON jobs (tenant, correlation_id, id)
    WHERE correlation_id IS NOT NULL;
