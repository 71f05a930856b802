"""``SqliteJobStore``: the ``JobStore`` port on one embedded SQLite file (the one-machine default)."""

# One connection serves the process from its own thread (``SqliteThread``); each method sends it
# one unit of work, and units run one at a time, so transactions never interleave on it.
# ``BEGIN IMMEDIATE`` takes SQLite's write lock up front, so writers in other processes wait
# (``patiently``) instead of failing halfway, and two racing claims never both see a free key.
# Times are integer microseconds since the epoch, UTC (exact round trips, integer comparisons);
# JSON columns hold orjson text.

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import orjson

from jobstore.migrations import load_migrations, pending, sqlite_statements
from jobstore.model import (
    Claim,
    ClaimState,
    Confirmed,
    JobRecord,
    JobStatus,
    NewJob,
    RunEnd,
    RunJob,
    RunStart,
    RunStarted,
    held_claim,
)
from jobstore.run_window import RUN_COLUMNS, STATUSES, Row, missing_jobs, new_row, plan_window
from jobstore.shared_sql import COLUMNS, INSERT_JOB, PURGE_BATCH, SharedSql
from jobstore.sqlite_connections import Busy, Db, InlineWriter, SqliteThread
from topology.errors import StoreError, StoreUnavailableError
from topology.priority import Priority

T = TypeVar("T")

# Primary result codes meaning "the file cannot be used right now": BUSY, LOCKED, NOMEM,
# READONLY, IOERR, FULL, CANTOPEN, PROTOCOL (https://www.sqlite.org/rescode.html).
_UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
_FOREIGN = (sqlite3.Error, OSError, orjson.JSONEncodeError, orjson.JSONDecodeError)
_TIMES = frozenset({"created_at", "updated_at", "not_before", "started_at", "finished_at"})
_JSON = frozenset({"payload", "payload_ref", "result"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM jobs"
_INSERT = INSERT_JOB.replace("$", "?")
_UNCONFIRMED = "INSERT INTO unconfirmed (job_id, publish_by) VALUES (?, ?)"
_CONFIRM = "DELETE FROM unconfirmed WHERE job_id = ?"
_CLEAR_MOVED_ON = (
    "DELETE FROM unconfirmed WHERE publish_by <= ? AND job_id IN (SELECT id FROM jobs"
    " WHERE id = unconfirmed.job_id AND NOT status IN ('queued', 'scheduled'))"
)
_TAKE_UNCONFIRMED = (
    "UPDATE unconfirmed SET publish_by = ? WHERE job_id IN (SELECT job_id FROM unconfirmed"
    " WHERE publish_by <= ? ORDER BY publish_by LIMIT ?) RETURNING job_id"
)
_CREATE_VERSIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations"
    " (version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL)"
)
_CLAIM = (
    "INSERT INTO idempotency_keys (key, request_hash, job_id, state, lease_until, expires_at)"
    " VALUES (?, ?, ?, 'pending', ?, ?) ON CONFLICT (key) DO NOTHING"
)
_HELD = (
    "SELECT request_hash, job_id, state, response, expires_at FROM idempotency_keys WHERE key = ?"
)
_RECLAIM = (
    "UPDATE idempotency_keys SET request_hash = ?, job_id = ?, state = 'pending', response = NULL,"
    " lease_until = ?, expires_at = ? WHERE key = ?"
)
_COMPLETE = (
    "UPDATE idempotency_keys SET state = 'done', response = ?, expires_at = ?"
    " WHERE job_id = ? AND state = 'pending'"
)
_PURGE = (
    "DELETE FROM idempotency_keys WHERE key IN"
    f" (SELECT key FROM idempotency_keys WHERE expires_at <= ? LIMIT {PURGE_BATCH})"
)
# A run window reads only what a worker needs: the message carries the rest, and decoding it
# would cost every job for nothing.
_READ_WINDOW = f"SELECT {', '.join(RUN_COLUMNS)}, deliveries, claim_until FROM jobs"
_START = (
    "UPDATE jobs SET status = 'running', attempts = ?, started_at = ?, updated_at = ?,"
    " deliveries = deliveries + 1, claim_until = ? WHERE id = ?"
)
_END = (
    "UPDATE jobs SET status = COALESCE(?, status), result = COALESCE(?, result),"
    " last_error = COALESCE(?, last_error), finished_at = COALESCE(?, finished_at),"
    " updated_at = ?, claim_until = NULL WHERE id = ?"
)


class SqliteJobStore(SharedSql):
    """Jobs and idempotency keys in a SQLite file, over one connection opened on first use."""

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._thread = SqliteThread(self._path)
        # A second connection to ":memory:" would be another database: no inline writes there.
        self._inline = InlineWriter(self._path) if str(path) != ":memory:" else None
        self._checkpoint: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def path(self) -> Path:
        """Return the database file's path."""
        return self._path

    async def migrate(self) -> int:
        """Apply pending schema migrations, each in its own transaction; return the version."""

        def versions(db: Db) -> int:
            db.execute(_CREATE_VERSIONS)
            return _version(db)

        version = await self._run(versions, write=True)
        for migration in pending(load_migrations("sqlite"), version):

            def apply(db: Db, migration: Any = migration) -> int:
                # Another process may have applied it since we looked; the write lock settles it.
                version = _version(db)
                if version < migration.version:
                    for statement in sqlite_statements(migration.sql):
                        db.execute(statement)
                    db.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                        (migration.version, _now_us()),
                    )
                    version = migration.version
                return version

            version = await self._run(apply, write=True)
        return version

    async def close(self) -> None:
        """Close the connection; later calls raise ``StoreError``."""
        if self._closed:
            return
        self._closed = True
        if self._checkpoint is not None:
            await self._checkpoint
        if self._inline is not None:
            self._inline.close()
        async with self._translated():
            await self._thread.close()

    async def ping(self) -> None:
        """Return when the database file answers; raise ``StoreUnavailableError`` otherwise."""
        await self._run(lambda db: db.execute("SELECT 1").fetchall())

    async def create_jobs(
        self, items: Sequence[NewJob], *, confirmed: Sequence[Confirmed] = (), durable: bool = True
    ) -> list[Claim]:
        """Insert many jobs (claiming their keys first) in one ``BEGIN IMMEDIATE`` transaction.

        Every commit here skips the fsync (``synchronous=NORMAL``), ``durable`` or not.
        """

        def insert(db: Db) -> list[Claim]:
            now = _now_us()
            if confirmed:
                _confirm(db, confirmed, now)
            claims: list[Claim] = []
            rows, deadlines = [], []
            for item in items:
                claim = Claim(ClaimState.NEW, item.job.id)
                if item.claim is not None:
                    claim = _claim(db, item.claim, item.job.id, item.lease_s)
                if claim.state is ClaimState.NEW:
                    rows.append(_row(item.job))
                    if item.confirm_within is not None:
                        deadlines.append((item.job.id, now + _seconds_us(item.confirm_within)))
                claims.append(claim)
            db.executemany(_INSERT, rows)
            db.executemany(_UNCONFIRMED, deadlines)
            return claims

        return await self._write(insert)

    async def confirm_jobs(self, items: Sequence[Confirmed]) -> None:
        """Clear the jobs' publish deadlines and complete their keys' claims in one transaction."""
        await self._write(lambda db: _confirm(db, items, _now_us()))

    async def take_unconfirmed(self, *, limit: int, lease_s: float) -> list[JobRecord]:
        """Take the overdue unconfirmed jobs (``BEGIN IMMEDIATE``), pushing their deadlines on."""
        now = _now_us()

        def take(db: Db) -> list[Any]:
            db.execute(_CLEAR_MOVED_ON, (now,))
            # Only queued and scheduled jobs are left past their deadline now.
            taken = db.execute(_TAKE_UNCONFIRMED, (now + _seconds_us(lease_s), now, limit))
            ids = [row[0] for row in taken.fetchall()]
            marks = ", ".join("?" * len(ids))
            return db.execute(f"{_SELECT} WHERE id IN ({marks}) ORDER BY id", ids).fetchall()

        return [self._job(row) for row in await self._run(take, write=True)]

    async def run_window(
        self, ends: Sequence[RunEnd], starts: Sequence[RunStart]
    ) -> tuple[list[RunJob | None], list[RunStarted]]:
        """End and start a window of runs in one ``BEGIN IMMEDIATE`` transaction.

        Written inline when SQLite's lock is free: the trip to the thread (its wakeup, the GIL
        handed back and forth) cost a window more than its commit, large or small.
        """

        def work(db: Db) -> tuple[list[RunJob | None], list[RunStarted]]:
            return _run_window(db, ends, starts)

        return await self._write(work)

    async def _write(self, work: Callable[[Db], T]) -> T:
        """Run a small write transaction inline when SQLite's lock is free (or soon), else on the thread."""
        if self._closed:
            raise StoreError("the job store is closed")
        if self._inline is not None:
            try:
                result = self._inline.write(work)
            except Busy:
                pass
            except _FOREIGN as exc:
                raise self._error(exc) from exc
            else:
                if self._inline.due_checkpoint() and self._checkpoint is None:
                    self._checkpoint = asyncio.create_task(self._copy_log())
                return result
        return await self._run(work, write=True)

    async def _copy_log(self) -> None:
        """Checkpoint the write-ahead log on the thread (inline writes never do: it can take ms)."""
        try:
            with suppress(StoreError):  # the next one tries again; nothing is lost meanwhile
                await self._run(lambda db: db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())
        finally:
            self._checkpoint = None

    async def _run(self, work: Callable[[Db], T], *, write: bool = False) -> T:
        """Run one unit of work on the connection's thread, translating its errors."""
        if self._closed:
            raise StoreError("the job store is closed")
        async with self._translated():
            return await self._thread.run(work, write=write)

    @asynccontextmanager
    async def _translated(self) -> AsyncIterator[None]:
        """Turn sqlite3, OS and JSON errors into ``StoreError`` (the one seam for foreign errors)."""
        try:
            yield
        except _FOREIGN as exc:
            raise self._error(exc) from exc

    def _error(self, exc: BaseException) -> StoreError:
        """Return the ``StoreError`` that says what a sqlite3, OS or JSON error means."""
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(exc, OSError) or (code is not None and code & 0xFF in _UNAVAILABLE_CODES):
            return StoreUnavailableError(f"the SQLite job store {self._path} is unavailable: {exc}")
        return StoreError(f"the SQLite job store {self._path} failed: {exc}")

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        """Run one statement, its ``$n`` parameters read as SQLite's ``?n``, and return its rows."""
        sql = sql.replace("$", "?")
        return await self._run(lambda db: db.execute(sql, args).fetchall())

    async def _execute(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        """Run statements, their ``$n`` parameters read as ``?n``, in one write transaction."""

        def execute(db: Db) -> None:
            for sql, args in statements:
                db.execute(sql.replace("$", "?"), args)

        await self._write(execute)

    def _value_in(self, column: str, value: Any) -> Any:
        """Return ``value`` as the jobs table's ``column`` stores it."""
        return _encode(column, value)

    def _time_in(self, when: datetime | None) -> int | None:
        """Return ``when`` in microseconds since the epoch (``None`` stays)."""
        return None if when is None else _to_us(when)

    def _time_out(self, value: int) -> datetime:
        """Return the time ``value`` microseconds after the epoch."""
        return _EPOCH + value * _MICROSECOND

    def _job(self, row: Sequence[Any]) -> JobRecord:
        """Return the ``JobRecord`` a jobs row (selected in ``COLUMNS`` order) holds."""
        values = dict(zip(COLUMNS, row, strict=True))
        for column in _TIMES:
            if values[column] is not None:
                values[column] = self._time_out(values[column])
        for column in _JSON:
            if values[column] is not None:
                values[column] = orjson.loads(values[column])
        values["status"] = JobStatus(values["status"])
        values["priority"] = Priority(values["priority"])
        return JobRecord(**values)


def _confirm(db: Db, items: Sequence[Confirmed], now: int) -> None:
    """Clear the items' publish deadlines and complete their keys' claims, in the caller's write."""
    db.executemany(_CONFIRM, [(i.job_id,) for i in items])
    done = [
        (i.response, now + _seconds_us(i.ttl_s), i.job_id) for i in items if i.response is not None
    ]
    if done:
        db.executemany(_COMPLETE, done)
        db.execute(_PURGE, (now,))  # housekeeping: expired keys, a batch at a time


def _claim(db: Db, claim: tuple[str, str], job_id: str, lease_s: float) -> Claim:
    """Claim the key inside the caller's ``BEGIN IMMEDIATE`` transaction (so no one races us)."""
    key, request_hash = claim
    now = _now_us()
    until = now + _seconds_us(lease_s)
    inserted = db.execute(_CLAIM, (key, request_hash, job_id, until, until))
    if inserted.rowcount == 1:
        return Claim(ClaimState.NEW, job_id)
    # The insert found the key, and our write lock keeps it there.
    ((held_hash, held_job, state, response, expires_at),) = db.execute(_HELD, (key,)).fetchall()
    if expires_at > now:
        return held_claim(request_hash, held_hash, held_job, state, response)
    # The holder's lease (or the replay window of a finished request) is over: the key is free.
    db.execute(_RECLAIM, (request_hash, job_id, until, until, key))
    return Claim(ClaimState.NEW, job_id)


def _run_window(
    db: Db, ends: Sequence[RunEnd], starts: Sequence[RunStart]
) -> tuple[list[RunJob | None], list[RunStarted]]:
    """End and start runs (see ``JobStore.run_window``) in the caller's write transaction."""
    # The claim lives on the job's row (``claim_until``); each statement takes every item of the
    # window at once: Python's work per statement is what a row costs here, far more than SQLite's.
    now = _now_us()
    ids = {item.job_id for item in ends} | {item.job_id for item in starts}
    rows: dict[str, Row] = {}
    if ids:
        marks = ", ".join("?" * len(ids))
        for key, kind, status, attempts, error, tenant, url, deliveries, claim in db.execute(
            f"{_READ_WINDOW} WHERE id IN ({marks})", tuple(ids)
        ):
            job = RunJob(key, kind, STATUSES[status], attempts, error, tenant, url)
            rows[key] = Row(job, deliveries, claim is not None and claim > now)
    created = missing_jobs(rows, ends, starts)
    if created:  # the write lock holds off the submitter's insert, which then finds them
        db.executemany(_INSERT, [_row(job) for job in created])
        rows.update((job.id, new_row(job)) for job in created)
    plan = plan_window(rows, ends, starts)
    if plan.ends:
        db.executemany(_END, [_end_values(end) for end in plan.ends])
    if plan.starts:
        db.executemany(
            _START,
            [
                (
                    s.attempt,
                    _to_us(s.started_at),
                    _to_us(s.started_at),
                    now + _seconds_us(s.lease_s),
                    s.job_id,
                )
                for s in plan.starts
            ],
        )
    return plan.ended, plan.started


def _end_values(end: RunEnd) -> tuple[object, ...]:
    at = _to_us(end.at)
    return (
        None if end.status is None else end.status.value,
        None if end.result is None else orjson.dumps(end.result).decode(),
        end.error,
        at if end.status is not None and end.status.terminal else None,
        at,
        end.job_id,
    )


def _row(job: JobRecord) -> tuple[Any, ...]:
    """Return the values of ``job``'s row, in ``COLUMNS`` order."""
    return tuple(_encode(name, getattr(job, name)) for name in COLUMNS)


def _encode(column: str, value: Any) -> Any:
    """Return ``value`` as the jobs table's ``column`` stores it."""
    if value is None:
        return None
    if column in _TIMES:
        return _to_us(value)
    if column in _JSON:
        return orjson.dumps(value).decode()
    return value.value if isinstance(value, Enum) else value


def _to_us(when: datetime) -> int:
    """Return microseconds since the epoch; integer arithmetic keeps the round trip exact."""
    if when.utcoffset() is None:
        raise ValueError(f"job store times must be timezone-aware, got naive {when.isoformat()}")
    return (when - _EPOCH) // _MICROSECOND


def _seconds_us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _now_us() -> int:
    return time.time_ns() // 1000


def _version(db: Db) -> int:
    (row,) = db.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()
    return int(row[0])
