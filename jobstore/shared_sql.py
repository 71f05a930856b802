"""The job store code that is the same on SQLite and PostgreSQL, written once over ``$n`` parameters: the SQL conversations either store runs in one transaction, the schema migrations, and the job, key and breaker SQL."""

from __future__ import annotations

import functools
import operator
import re
import sqlite3
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from importlib.resources import files
from typing import Any, Literal, TypeVar

import orjson

from jobstore.model import (
    BREAKER_CHANGES_KEPT,
    ApiKeyRecord,
    AuditEntry,
    BreakerRecord,
    Claim,
    ClaimState,
    DataChange,
    JobEvent,
    JobEventKind,
    JobPage,
    JobRecord,
    JobSearch,
    JobStatus,
    KeptFor,
    NewJob,
    RunEnd,
    Swept,
    check_settable,
    held_claim,
)
from topology.errors import StoreError
from topology.names import Priority

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Query:
    """One statement over ``$n`` parameters: run once with ``args`` (its rows sent back), or once per row of ``rows``."""

    sql: str
    args: Sequence[Any] = ()
    rows: Sequence[Sequence[Any]] = field(default=())
    many: bool = False


Talk = Generator[Query, list[Any], T]
"""A conversation: it yields each statement, receives the rows it returned, and returns its answer."""


def many(sql: str, rows: Sequence[Sequence[Any]]) -> Query:
    """Return ``sql`` to run once per row of ``rows`` (nothing when there are none)."""
    return Query(sql, rows=rows, many=True)


def statements(*queries: Query) -> Talk[None]:
    """Return the conversation that runs ``queries`` in order and answers nothing."""
    for query in queries:
        _ = yield query  # (not yield from: the store sends each statement its rows)


def marks(count: int, first: int = 1) -> str:
    """Return ``$first, ..., $(first + count - 1)``: the parameters of an ``IN (...)`` list."""
    return ", ".join(f"${n}" for n in range(first, first + count))


Dialect = Literal["sqlite", "postgres"]

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def load_migrations(dialect: Dialect, above: int = 0) -> dict[int, str]:
    """Return the SQL of the dialect's migrations (files named ``NNNN_name.sql``) numbered over ``above``, by version, in order."""
    found: dict[int, str] = {}
    for entry in (files("jobstore") / "migrations" / dialect).iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if match is None or int(match[1]) in found:
            raise StoreError(
                f"migration {dialect}/{entry.name} is not named NNNN_name.sql with a number of its own"
            )
        found[int(match[1])] = entry.read_text(encoding="utf-8")
    return {version: sql for version, sql in sorted(found.items()) if version > above}


def sqlite_statements(script: str) -> list[str]:
    """Split a SQLite script into statements, the way SQLite itself finds their ends."""
    found: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            found.append(buffer.strip())
            buffer = ""
    if any(line.strip() and not line.strip().startswith("--") for line in buffer.splitlines()):
        raise StoreError(f"migration ends with an unterminated statement: {buffer.strip()[:60]!r}")
    return found


COLUMNS = tuple(JobRecord.__dataclass_fields__)
# The time columns of every table (a job's, a workflow's, a schedule's, a key's, a breaker's...).
TIMES = frozenset(
    {"created_at", "updated_at", "not_before", "started_at", "finished_at", "at"}
    | {"since", "last_due", "paused_at", "expires_at", "revoked_at", "last_used_at", "changed_at"}
)
JSON = frozenset({"payload", "payload_ref", "result"})  # orjson text on both stores
_COLUMN_VALUES = operator.attrgetter(*COLUMNS)
_TIME_AT = [at for at, name in enumerate(COLUMNS) if name in TIMES]
_JSON_AT = [at for at, name in enumerate(COLUMNS) if name in JSON]
_ENUM_AT = [COLUMNS.index("status"), COLUMNS.index("priority")]  # the job's only enum fields
INSERT_JOB = (
    f"INSERT INTO jobs ({', '.join(COLUMNS)})"
    f" VALUES ({marks(len(COLUMNS))})"
    " ON CONFLICT (id) DO NOTHING"
)
"""Insert a job unless its row exists: the worker that ran it first created it from its message."""
END_RUN = (
    "UPDATE jobs SET status = COALESCE($2, status), result = COALESCE($3, result),"
    " last_error = COALESCE($4, last_error), finished_at = COALESCE($5, finished_at),"
    " updated_at = $6, claim_until = NULL WHERE id = $1"
)
EVENT_COLUMNS = tuple(JobEvent.__dataclass_fields__)
INSERT_EVENT = (
    f"INSERT INTO job_events ({', '.join(EVENT_COLUMNS)})"
    f" SELECT id, {marks(len(EVENT_COLUMNS) - 1, 2)}"
    " FROM jobs WHERE id = $1"
)
"""Insert a job's event, if the job is there (its row may have expired meanwhile)."""
# Claims a free key or takes over a lapsed one; a held key returns no row (on PostgreSQL it is
# locked until commit, so the read of its holder that follows sees it). A store fills in its
# lease's end ($4) and its now.
CLAIM_KEY = (
    "INSERT INTO idempotency_keys (key, request_hash, job_id, state, lease_until, expires_at)"
    " VALUES ($1, $2, $3, 'pending', {until}, {until}) ON CONFLICT (key) DO UPDATE SET"
    " request_hash = excluded.request_hash, job_id = excluded.job_id, state = 'pending',"
    " response = NULL, lease_until = excluded.lease_until, expires_at = excluded.expires_at"
    " WHERE idempotency_keys.expires_at <= {now} RETURNING job_id"
)
HELD_KEY = "SELECT request_hash, job_id, state, response FROM idempotency_keys WHERE key = $1"
# A repair sweep clears the deadlines of jobs that moved on, then pushes up to $1 overdue ones
# on and takes them; a store fills in its now and a lease's end ($2), and PostgreSQL its lock
# (SKIP LOCKED: concurrent sweeps take different jobs instead of waiting on each other).
CLEAR_MOVED_ON = (
    "DELETE FROM unconfirmed WHERE publish_by <= {now} AND job_id IN (SELECT id FROM jobs"
    " WHERE id = unconfirmed.job_id AND NOT status IN ('queued', 'scheduled'))"
)
TAKE_UNCONFIRMED = (
    "UPDATE unconfirmed SET publish_by = {until} WHERE job_id IN (SELECT job_id FROM unconfirmed"
    " WHERE publish_by <= {now} ORDER BY publish_by LIMIT $1{lock}) RETURNING job_id"
)
PURGE_BATCH = 100  # expired keys deleted per completion, so the table stays bounded
# Written as the index of finished jobs (migration 0007) declares it, so the planner uses it.
_FINISHED = "status IN ('cancelled', 'dead', 'failed', 'succeeded')"
# The types of the finished jobs, one index probe each (a loose index scan, not a full one).
_FINISHED_TYPES = f"""
WITH RECURSIVE t (type) AS (
    SELECT (SELECT type FROM jobs WHERE {_FINISHED} ORDER BY type LIMIT 1)
    UNION ALL
    SELECT (SELECT type FROM jobs WHERE {_FINISHED} AND type > t.type ORDER BY type LIMIT 1)
    FROM t WHERE t.type IS NOT NULL)
SELECT type FROM t WHERE type IS NOT NULL
"""
# One type's oldest finished jobs that ended before its cutoff ($2; a dead job before $3). One
# statement: a job replayed meanwhile is no longer final, and is not deleted.
_EXPIRE = f"""
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs WHERE type = $1 AND {_FINISHED} AND finished_at < $2
    AND (status <> 'dead' OR finished_at < $3) ORDER BY finished_at LIMIT $4)
RETURNING payload_ref
"""
# The queued jobs of each tenant (found by skipping through the tenants, a probe each), each a
# range of the index on (tenant, status, id) that also holds their type and priority: what
# is read grows with the jobs waiting, not with every job kept.
_QUEUED_COUNTS = """
WITH RECURSIVE t (tenant) AS (
    SELECT (SELECT tenant FROM jobs ORDER BY tenant LIMIT 1)
    UNION ALL
    SELECT (SELECT tenant FROM jobs WHERE tenant > t.tenant ORDER BY tenant LIMIT 1)
    FROM t WHERE t.tenant IS NOT NULL)
SELECT j.type, j.priority, count(*) FROM t JOIN jobs j ON j.tenant = t.tenant
WHERE j.status = 'queued' GROUP BY j.type, j.priority
"""
_BREAKER = "group_name, dependency, worker, state, failures, changed_at"
_BREAKER_FIELDS = tuple(BreakerRecord.__dataclass_fields__)  # the columns, group_name as group
_INSERT_BREAKER_CHANGE = f"INSERT INTO breaker_changes ({_BREAKER}) VALUES ($1, $2, $3, $4, $5, $6)"
# Ids are insertion order, so the latest transitions are the highest ids (a gap in them only
# keeps a few less).
_TRIM_BREAKER_CHANGES = (
    "DELETE FROM breaker_changes WHERE id <= (SELECT max(id) FROM breaker_changes) - $1"
)
_KEY_FIELDS = tuple(ApiKeyRecord.__dataclass_fields__)
_KEY = ", ".join(_KEY_FIELDS)
_SELECT_KEYS = f"SELECT {_KEY} FROM api_keys"
_AUDIT_FIELDS = tuple(AuditEntry.__dataclass_fields__)  # at second, finished_at last
_AUDIT_COLUMNS = tuple("group_name" if f == "group" else f for f in _AUDIT_FIELDS)
_SELECT_JOBS = f"SELECT {', '.join(COLUMNS)} FROM jobs"
# A job's id is a UUIDv7 made as the job is (topology.envelope.new_job_id): its time is its
# creation time give or take this, however long the submission took between the two.
_ID_SLACK = timedelta(hours=1)


class SharedSql:
    """Job rows in and out, reads and updates, API keys and breakers; a store supplies ``_fetch`` and ``_talk``."""

    _claim_key: str  # ``CLAIM_KEY`` in the store's terms
    _clear_moved_on: str  # ``CLEAR_MOVED_ON`` in the store's terms
    _take_unconfirmed: str  # ``TAKE_UNCONFIRMED`` in the store's terms

    async def _fetch(self, sql: str, *args: Any) -> Sequence[Any]:
        """Run one statement with numbered parameters and return its rows."""
        raise NotImplementedError

    async def _talk(self, talk: Talk[T]) -> T:
        """Run the conversation ``talk`` in one write transaction and return its answer."""
        raise NotImplementedError

    def _lease(self, seconds: float) -> tuple[Any, ...]:
        """Return a lease of ``seconds`` as the store's statements take it: its end, then the store's now if it sends it."""
        raise NotImplementedError

    def _time_in(self, when: datetime | None) -> Any:
        """Return ``when`` as a time column stores it (``None`` stays): here as it is, but never naive."""
        if when is not None and when.utcoffset() is None:
            raise ValueError(f"job store times must be timezone-aware, got naive {when}")
        return when

    def _time_out(self, value: Any) -> datetime:
        """Return the time a time column holds: here the aware datetime the driver read."""
        return value  # type: ignore[no-any-return]

    def _value_in(self, column: str, value: Any) -> Any:
        """Return ``value`` as the jobs table's ``column`` stores it."""
        if value is None:
            return None
        if column in TIMES:
            return self._time_in(value)
        if column in JSON:
            return orjson.dumps(value).decode()
        return value.value if isinstance(value, Enum) else value

    def _row(self, job: JobRecord) -> list[Any]:
        """Return the values of ``job``'s row, in ``COLUMNS`` order."""
        # What _value_in does column by column, on the columns that need it: every submission
        # makes a row, and most of its values (the NULLs above all) go in as they are.
        row = list(_COLUMN_VALUES(job))
        for at in _TIME_AT:
            if row[at] is not None:
                row[at] = self._time_in(row[at])
        for at in _JSON_AT:
            if row[at] is not None:
                row[at] = orjson.dumps(row[at]).decode()
        for at in _ENUM_AT:
            row[at] = row[at].value
        return row

    def _decoded(self, columns: Sequence[str], row: Iterable[Any]) -> dict[str, Any]:
        """Return a row's values by its ``columns``' names, its times and JSON decoded."""
        values = dict(zip(columns, row, strict=True))
        for name, value in values.items():
            if value is not None and name in TIMES:
                values[name] = self._time_out(value)
            elif value is not None and name in JSON:
                values[name] = orjson.loads(value)
        return values

    def _job(self, row: Iterable[Any]) -> JobRecord:
        """Return the job a jobs row (selected in ``COLUMNS`` order) holds."""
        values = self._decoded(COLUMNS, row)
        values["status"] = JobStatus(values["status"])
        values["priority"] = Priority(values["priority"])
        return JobRecord(**values)

    def _claiming(self, items: Sequence[NewJob]) -> Talk[list[Claim]]:
        """Claim the items' keys in order, in the caller's transaction; a claim per item."""
        claims = []
        for item in items:
            key, job_id = item.claim, item.job.id
            # Most jobs have no key: their lease is never worked out.
            if key is None or (
                yield Query(self._claim_key, (*key, job_id, *self._lease(item.lease_s)))
            ):
                claims.append(Claim(ClaimState.NEW, job_id))
            else:
                [held] = yield Query(HELD_KEY, (key[0],))
                claims.append(held_claim(key[1], *held))
        return claims

    def _ended(self, end: RunEnd) -> tuple[Any, ...]:
        """Return the parameters of ``END_RUN`` for ``end``."""
        at = self._time_in(end.at)
        finished = at if end.status is not None and end.status.terminal else None
        status = None if end.status is None else end.status.value
        return (end.job_id, status, self._value_in("result", end.result), end.error, finished, at)

    async def take_unconfirmed(self, *, limit: int, lease_s: float) -> list[JobRecord]:
        """Take the overdue unconfirmed jobs, pushing their deadlines on (one transaction)."""
        return await self._talk(self._taking(limit, self._lease(lease_s)))

    def _taking(self, limit: int, lease: tuple[Any, ...]) -> Talk[list[JobRecord]]:
        yield Query(self._clear_moved_on, lease[1:])  # (the now SQLite sends)
        # Only queued and scheduled jobs are left past their deadline now.
        ids = [job_id for (job_id,) in (yield Query(self._take_unconfirmed, (limit, *lease)))]
        if not ids:
            return []
        rows = yield Query(f"{_SELECT_JOBS} WHERE id IN ({marks(len(ids))}) ORDER BY id", ids)
        return [self._job(row) for row in rows]

    async def ping(self) -> None:
        """Return when the database answers; raise ``StoreUnavailableError`` otherwise."""
        await self._fetch("SELECT 1")

    async def replace_data(self, changes: Sequence[DataChange]) -> None:
        """Write each change's new payload or result, where the column still holds its old value."""
        # Compare-and-set: a result a worker wrote meanwhile is never overwritten.
        for column in ("payload", "result"):
            value = functools.partial(self._value_in, column)
            rows = [(c.job_id, value(c.new), value(c.old)) for c in changes if c.column == column]
            if rows:
                sql = f"UPDATE jobs SET {column} = $2 WHERE id = $1 AND {column} = $3"
                await self._talk(statements(many(sql, rows)))

    async def revive(self, job_id: str, at: datetime) -> bool:
        """Move a dead-lettered job back to queued at ``at``, attempts and deliveries at 0; whether it was."""
        # The delivery count starts again too: else the poison bound, which counts starts
        # beyond attempts, would take a job that used many attempts for poison at once. A job
        # the broker dead-lettered itself (a quorum queue's delivery limit) keeps the status
        # its last delivery left, so that status is revived like "dead".
        rows = await self._fetch(
            "UPDATE jobs SET status = 'queued', attempts = 0, deliveries = 0, finished_at = NULL,"
            " updated_at = $2 WHERE id = $1"
            " AND status IN ('dead', 'queued', 'running', 'retrying') RETURNING id",
            job_id,
            self._time_in(at),
        )
        return bool(rows)

    async def abandon_job(self, job_id: str, key: str | None) -> None:
        """Delete a job that never reached the broker, and its key (ON DELETE CASCADE); one a worker started stays."""
        await self._fetch(
            "DELETE FROM jobs WHERE id = $1 AND status IN ('queued', 'scheduled')", job_id
        )

    async def get_job(self, job_id: str) -> JobRecord | None:
        """Return the job, or ``None`` when there is no such job."""
        rows = await self._fetch(f"{_SELECT_JOBS} WHERE id = $1", job_id)
        return next((self._job(row) for row in rows), None)

    async def list_jobs(self, search: JobSearch = JobSearch()) -> JobPage:
        """Return the jobs ``search`` keeps, newest first (by UUIDv7 id), one page of them."""
        limit, status, cursor = search.limit, search.status, search.cursor
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        since, before = search.created
        # Only the filters given reach the SQL, so every variant is a plain index range scan.
        # A time range is also said as a range of ids: the index then starts where it begins.
        given = [
            ("tenant =", search.tenant),
            ("status =", None if status is None else status.value),
            ("type =", search.type),
            ("correlation_id =", search.correlation_id),
            ("id <", cursor),
            ("created_at >=", self._time_in(since)),
            ("created_at <", self._time_in(before)),
            ("id >=", None if since is None else _id_floor(since - _ID_SLACK)),
            ("id <", None if before is None else _id_floor(before + _ID_SLACK)),
        ]
        tests = [(test, value) for test, value in given if value is not None]
        where = " AND ".join(f"{test} ${n}" for n, (test, _) in enumerate(tests, start=1))
        # One row more than the page tells whether another page follows.
        rows = await self._fetch(
            f"{_SELECT_JOBS}{' WHERE ' if where else ''}{where} ORDER BY id DESC LIMIT ${len(tests) + 1}",
            *(value for _, value in tests),
            limit + 1,
        )
        jobs = [self._job(row) for row in rows[:limit]]
        return JobPage(jobs, jobs[-1].id if len(rows) > limit else None)

    async def transition(
        self, job_id: str, to: JobStatus, *, allowed_from: frozenset[JobStatus], **fields: Any
    ) -> JobRecord | None:
        """Move the job to ``to`` and set ``fields`` only if its status is in ``allowed_from``; ``TypeError`` for unsettable fields."""
        check_settable(fields)
        if not allowed_from:
            return None
        query = self._transition(job_id, to, allowed_from, fields)
        rows = await self._fetch(query.sql, *query.args)
        return next((self._job(row) for row in rows), None)

    def _transition(
        self, job_id: str, to: JobStatus, allowed_from: Iterable[JobStatus], fields: dict[str, Any]
    ) -> Query:
        """Return the statement that moves the job to ``to`` and sets ``fields`` if its status is in ``allowed_from``."""
        allowed = list(allowed_from)
        sets = "".join(f", {name} = ${n}" for n, name in enumerate(fields, start=3))
        # One statement is atomic on its own: the status test and the update cannot be split (a
        # racing PostgreSQL update waits for the row lock, then re-checks the committed row).
        return Query(
            f"UPDATE jobs SET status = $1{sets} WHERE id = $2"
            f" AND status IN ({marks(len(allowed), 3 + len(fields))})"
            f" RETURNING {', '.join(COLUMNS)}",
            (
                to.value,
                job_id,
                *(self._value_in(name, value) for name, value in fields.items()),
                *(status.value for status in allowed),
            ),
        )

    async def sweep(self, kept_for: KeptFor, *, limit: int, ask: Sequence[str] = ()) -> Swept:
        """Delete up to ``limit`` finished jobs past ``kept_for``, a statement per type; say which ``ask`` ids have no job."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        found: set[str] = set()
        if ask:
            rows = await self._fetch(f"SELECT id FROM jobs WHERE id IN ({marks(len(ask))})", *ask)
            found = {row[0] for row in rows}
        now = datetime.now(UTC)
        jobs, blobs = 0, []
        for (job_type,) in await self._fetch(_FINISHED_TYPES):
            if jobs >= limit:
                break
            ends = [now - timedelta(seconds=kept_for(job_type, dead)) for dead in (False, True)]
            rows = await self._fetch(_EXPIRE, job_type, *map(self._time_in, ends), limit - jobs)
            jobs += len(rows)
            blobs += [orjson.loads(row[0])["uri"] for row in rows if row[0] is not None]
        return Swept(jobs, blobs, [job_id for job_id in ask if job_id not in found])

    async def record_breaker(self, breaker: BreakerRecord) -> None:
        """Insert or replace the row of ``breaker``'s (group, dependency, worker); log the transition."""
        values = [self._value_in(name, getattr(breaker, name)) for name in _BREAKER_FIELDS]
        await self._talk(
            statements(
                Query(
                    f"INSERT INTO breakers ({_BREAKER}) VALUES ($1, $2, $3, $4, $5, $6)"
                    " ON CONFLICT (group_name, dependency, worker) DO UPDATE SET"
                    " state = excluded.state, failures = excluded.failures,"
                    " changed_at = excluded.changed_at",
                    values,
                ),
                Query(_INSERT_BREAKER_CHANGE, values),
                Query(_TRIM_BREAKER_CHANGES, (BREAKER_CHANGES_KEPT,)),
            )
        )

    async def list_breaker_changes(self, *, limit: int = 50) -> list[BreakerRecord]:
        """Return the latest ``limit`` breaker transitions, newest first."""
        rows = await self._fetch(
            f"SELECT {_BREAKER} FROM breaker_changes ORDER BY id DESC LIMIT $1", limit
        )
        return self._breakers(rows)

    async def list_breakers(self, group: str | None = None) -> list[BreakerRecord]:
        """Return the recorded breakers, of ``group`` only when given, by group, dependency, worker."""
        where, args = (" WHERE group_name = $1", (group,)) if group is not None else ("", ())
        rows = await self._fetch(
            f"SELECT {_BREAKER} FROM breakers{where} ORDER BY group_name, dependency, worker", *args
        )
        return self._breakers(rows)

    def _breakers(self, rows: Iterable[Sequence[Any]]) -> list[BreakerRecord]:
        return [BreakerRecord(**self._decoded(_BREAKER_FIELDS, row)) for row in rows]

    async def forget_breakers(self, worker: str) -> None:
        """Delete every breaker row of ``worker``."""
        await self._fetch("DELETE FROM breakers WHERE worker = $1", worker)

    async def create_api_key(self, key: ApiKeyRecord) -> None:
        """Insert ``key``; raise ``StoreError`` when its id is taken."""
        values = {name: self._value_in(name, getattr(key, name)) for name in _KEY_FIELDS}
        # Scopes and job-type patterns are kept as space-separated text.
        values["scopes"] = " ".join(key.scopes)
        values["job_types"] = None if key.job_types is None else " ".join(key.job_types)
        sql = f"INSERT INTO api_keys ({_KEY}) VALUES ({marks(len(values))})"
        await self._fetch(sql, *values.values())

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """Return the key with id ``key_id`` (revoked and expired ones too), or ``None``."""
        rows = await self._fetch(f"{_SELECT_KEYS} WHERE id = $1", key_id)
        return next((self._api_key(row) for row in rows), None)

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Return every key, oldest first."""
        return [
            self._api_key(r) for r in await self._fetch(f"{_SELECT_KEYS} ORDER BY created_at, id")
        ]

    async def revoke_api_key(self, key_id: str, at: datetime) -> ApiKeyRecord | None:
        """Mark the key revoked at ``at`` unless it already is; ``None`` if unknown."""
        rows = await self._fetch(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1"
            f" RETURNING {_KEY}",
            key_id,
            self._time_in(at),
        )
        return next((self._api_key(row) for row in rows), None)

    async def touch_api_key(self, key_id: str, at: datetime) -> None:
        """Move the key's last use forward to ``at`` (never back in time)."""
        await self._fetch(
            "UPDATE api_keys SET last_used_at = $2"
            " WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            key_id,
            self._time_in(at),
        )

    async def queued_counts(self) -> list[tuple[str, Priority, int]]:
        """Return how many jobs wait queued, by job type and priority, of every tenant."""
        rows = await self._fetch(_QUEUED_COUNTS)
        return [(job_type, Priority(priority), int(count)) for job_type, priority, count in rows]

    async def record_audit(self, entry: AuditEntry) -> None:
        """Insert ``entry``, or replace the entry of its id (an operation that ended)."""
        values = [self._value_in(name, getattr(entry, name)) for name in _AUDIT_FIELDS]
        values[8] = None if entry.rate is None else float(entry.rate)  # a float8 on PostgreSQL
        updates = ", ".join(f"{c} = excluded.{c}" for c in _AUDIT_COLUMNS[-4:])
        await self._fetch(
            f"INSERT INTO dlq_audit ({', '.join(_AUDIT_COLUMNS)}) VALUES ({marks(len(values))})"
            f" ON CONFLICT (id) DO UPDATE SET {updates}",
            *values,
        )

    async def list_audit(self, tenant: str, group: str, *, limit: int = 20) -> list[AuditEntry]:
        """Return the latest ``limit`` audit entries of ``tenant``'s operations on ``group``, newest first."""
        rows = await self._fetch(
            f"SELECT {', '.join(_AUDIT_COLUMNS)} FROM dlq_audit"
            " WHERE tenant = $1 AND group_name = $2 ORDER BY id DESC LIMIT $3",
            tenant,
            group,
            limit,
        )
        return [AuditEntry(**self._decoded(_AUDIT_FIELDS, row)) for row in rows]

    def event_row(self, event: JobEvent) -> tuple[Any, ...]:
        """Return the parameters of ``INSERT_EVENT`` for ``event``."""
        return tuple(self._value_in(name, getattr(event, name)) for name in EVENT_COLUMNS)

    async def record_events(self, events: Sequence[JobEvent]) -> None:
        """Insert the events of jobs that exist, in one transaction."""
        if events:
            await self._talk(statements(many(INSERT_EVENT, [self.event_row(e) for e in events])))

    async def list_events(self, job_id: str, *, limit: int = 200) -> list[JobEvent]:
        """Return the job's first ``limit`` events, oldest first."""
        rows = await self._fetch(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM job_events WHERE job_id = $1"
            " ORDER BY id LIMIT $2",
            job_id,
            limit,
        )
        return [
            JobEvent(job, self._time_out(at), JobEventKind(kind), int(attempt), *rest)
            for job, at, kind, attempt, *rest in rows
        ]

    def _api_key(self, row: Sequence[Any]) -> ApiKeyRecord:
        values = self._decoded(_KEY_FIELDS, row)
        types = values["job_types"]
        values["secret_hash"] = bytes(values["secret_hash"])
        values["scopes"] = tuple(values["scopes"].split())
        values["job_types"] = None if types is None else tuple(types.split())
        return ApiKeyRecord(**values)


def _id_floor(when: datetime) -> str:
    """Return the lowest UUIDv7 made at or after ``when``: its millisecond time, as a prefix."""
    ms = max(0, min(int(when.timestamp() * 1000), 2**48 - 1))
    digits = f"{ms:012x}"
    return f"{digits[:8]}-{digits[8:12]}-"
