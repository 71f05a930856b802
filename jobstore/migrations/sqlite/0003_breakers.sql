-- Circuit breakers as each worker last reported them, for `taskctl breakers` (SQLite).
-- changed_at is integer microseconds since the Unix epoch, UTC.

CREATE TABLE breakers (
    group_name TEXT NOT NULL,  -- "group" is an SQL keyword
    dependency TEXT NOT NULL,
    worker     TEXT NOT NULL,  -- hostname:pid
    state      TEXT NOT NULL,
    failures   INTEGER NOT NULL,
    changed_at INTEGER NOT NULL,
    PRIMARY KEY (group_name, dependency, worker)
);

-- A stopping worker deletes its rows by worker.
CREATE INDEX breakers_worker ON breakers (worker);
