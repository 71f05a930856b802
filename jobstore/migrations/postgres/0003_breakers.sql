-- Circuit breakers as each worker last reported them, for `taskctl breakers` (PostgreSQL).

-- The "C" collation orders names by bytes, as SQLite and Python do, whatever the locale.
CREATE TABLE breakers (
    group_name text COLLATE "C" NOT NULL,  -- "group" is an SQL keyword
    dependency text COLLATE "C" NOT NULL,
    worker     text COLLATE "C" NOT NULL,  -- hostname:pid
    state      text NOT NULL,
    failures   integer NOT NULL,
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (group_name, dependency, worker)
);

-- A stopping worker deletes its rows by worker.
CREATE INDEX breakers_worker ON breakers (worker);
