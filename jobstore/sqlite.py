"""``SqliteJobStore``: the ``JobStore`` port on one embedded SQLite file (the one-machine default).

One connection serves the whole process from its own thread (``SqliteThread``); each method
sends it one unit of work (a statement, or a ``BEGIN IMMEDIATE`` transaction), and units run
one at a time, so two transactions never interleave on the connection. ``BEGIN IMMEDIATE``
takes SQLite's write lock up front, so writers in other processes wait (``patiently``)
instead of failing halfway, and two racing claims never both see a free key.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from jobstore import sqlite_runs
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
    check_settable,
)
from jobstore.shared_sql import SharedSql
from jobstore.sqlite_inline import Busy, InlineWriter
from jobstore.sqlite_rows import (
    COLUMNS,
    encode,
    from_us,
    job_values,
    now_us,
    record,
    seconds_us,
    to_us,
)
from jobstore.sqlite_thread import SqliteThread
from topology.errors import StoreError, StoreUnavailableError

T = TypeVar("T")
Db = sqlite3.Connection

# Primary result codes meaning "the file cannot be used right now": BUSY, LOCKED, NOMEM,
# READONLY, IOERR, FULL, CANTOPEN, PROTOCOL (https://www.sqlite.org/rescode.html).
_UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
_FOREIGN = (sqlite3.Error, OSError, orjson.JSONEncodeError, orjson.JSONDecodeError)
_PURGE_BATCH = 100  # expired keys deleted per completion, so the table stays bounded

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM jobs"
_INSERT = f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_UNCONFIRMED = "INSERT INTO unconfirmed (job_id, publish_by) VALUES (?, ?)"
_CONFIRM = "DELETE FROM unconfirmed WHERE job_id = ?"
_PENDING = "status IN ('queued', 'scheduled')"
_CLEAR_MOVED_ON = (
    "DELETE FROM unconfirmed WHERE publish_by <= ? AND job_id IN"
    f" (SELECT id FROM jobs WHERE id = unconfirmed.job_id AND NOT {_PENDING})"
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
    f" (SELECT key FROM idempotency_keys WHERE expires_at <= ? LIMIT {_PURGE_BATCH})"
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
                        (migration.version, now_us()),
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

    async def create_job(
        self, job: JobRecord, *, claim: tuple[str, str] | None = None, lease_s: float = 60.0
    ) -> Claim:
        """Insert ``job``, first claiming its idempotency key in the same transaction."""

        def insert(db: Db) -> Claim:
            if claim is not None:
                outcome = _claim(db, claim, job.id, lease_s)
                if outcome.state is not ClaimState.NEW:
                    return outcome
            db.execute(_INSERT, job_values(job))
            return Claim(ClaimState.NEW, job.id)

        return await self._write(insert)

    async def create_jobs(
        self, items: Sequence[NewJob], *, confirmed: Sequence[Confirmed] = ()
    ) -> list[Claim]:
        """Insert many jobs (claiming their keys first) in one ``BEGIN IMMEDIATE`` transaction."""

        def insert(db: Db) -> list[Claim]:
            now = now_us()
            if confirmed:
                _confirm(db, confirmed, now)
            claims: list[Claim] = []
            rows, deadlines = [], []
            for item in items:
                claim = Claim(ClaimState.NEW, item.job.id)
                if item.claim is not None:
                    claim = _claim(db, item.claim, item.job.id, item.lease_s)
                if claim.state is ClaimState.NEW:
                    rows.append(job_values(item.job))
                    if item.confirm_within is not None:
                        deadlines.append((item.job.id, now + seconds_us(item.confirm_within)))
                claims.append(claim)
            db.executemany(_INSERT, rows)
            db.executemany(_UNCONFIRMED, deadlines)
            return claims

        return await self._write(insert)

    async def confirm_jobs(self, items: Sequence[Confirmed]) -> None:
        """Clear the jobs' publish deadlines and complete their keys' claims in one transaction."""
        await self._write(lambda db: _confirm(db, items, now_us()))

    async def take_unconfirmed(self, *, limit: int, lease_s: float) -> list[JobRecord]:
        """Take the overdue unconfirmed jobs (``BEGIN IMMEDIATE``), pushing their deadlines on."""
        now = now_us()

        def take(db: Db) -> list[Any]:
            db.execute(_CLEAR_MOVED_ON, (now,))
            # Only queued and scheduled jobs are left past their deadline now.
            taken = db.execute(_TAKE_UNCONFIRMED, (now + seconds_us(lease_s), now, limit))
            ids = [row[0] for row in taken.fetchall()]
            marks = ", ".join("?" * len(ids))
            return db.execute(f"{_SELECT} WHERE id IN ({marks}) ORDER BY id", ids).fetchall()

        return [record(row) for row in await self._run(take, write=True)]

    async def abandon_job(self, job_id: str, key: str | None) -> None:
        """Delete a job that never reached the broker, and free its key if the key is still its."""

        def abandon(db: Db) -> None:
            if key is not None:
                db.execute(
                    "DELETE FROM idempotency_keys WHERE key = ? AND job_id = ?", (key, job_id)
                )
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

        await self._write(abandon)

    async def transition(
        self, job_id: str, to: JobStatus, *, allowed_from: frozenset[JobStatus], **fields: Any
    ) -> JobRecord | None:
        """Move the job to ``to`` and set ``fields`` only if its status is in ``allowed_from``.

        Raises:
            TypeError: a field is not a settable ``JobRecord`` field.
        """
        check_settable(fields)
        if not allowed_from:
            return None
        sets = "".join(f", {name} = ?" for name in fields)
        marks = ", ".join("?" * len(allowed_from))
        sql = (
            f"UPDATE jobs SET status = ?{sets} WHERE id = ? AND status IN ({marks})"
            f" RETURNING {', '.join(COLUMNS)}"
        )
        values = [encode(name, value) for name, value in fields.items()]
        params = (to.value, *values, job_id, *(s.value for s in allowed_from))
        # One statement is atomic on its own: the status test and the update cannot be split.
        rows = await self._run(lambda db: db.execute(sql, params).fetchall())
        return next((record(row) for row in rows), None)

    async def run_window(
        self, ends: Sequence[RunEnd], starts: Sequence[RunStart]
    ) -> tuple[list[RunJob | None], list[RunStarted]]:
        """End and start a window of runs in one ``BEGIN IMMEDIATE`` transaction.

        Written inline when SQLite's lock is free: the trip to the thread (its wakeup, the GIL
        handed back and forth) cost a window more than its commit, large or small.
        """

        def work(db: Db) -> tuple[list[RunJob | None], list[RunStarted]]:
            return sqlite_runs.run_window(db, ends, starts)

        return await self._write(work)

    async def _write(self, work: Callable[[Db], T]) -> T:
        """Run a small write transaction inline when SQLite's lock is free, else on the thread."""
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

    def _time_in(self, when: datetime | None) -> int | None:
        """Return ``when`` in microseconds since the epoch (``None`` stays)."""
        return None if when is None else to_us(when)

    def _time_out(self, value: int) -> datetime:
        """Return the time ``value`` microseconds after the epoch."""
        return from_us(value)

    def _job(self, row: Any) -> JobRecord:
        """Return the job a jobs row holds."""
        return record(row)


def _confirm(db: Db, items: Sequence[Confirmed], now: int) -> None:
    """Clear the items' publish deadlines and complete their keys' claims, in the caller's write."""
    db.executemany(_CONFIRM, [(i.job_id,) for i in items])
    done = [
        (i.response, now + seconds_us(i.ttl_s), i.job_id) for i in items if i.response is not None
    ]
    if done:
        db.executemany(_COMPLETE, done)
        db.execute(_PURGE, (now,))  # housekeeping: expired keys, a batch at a time


def _claim(db: Db, claim: tuple[str, str], job_id: str, lease_s: float) -> Claim:
    """Claim the key inside the caller's ``BEGIN IMMEDIATE`` transaction (so no one races us)."""
    key, request_hash = claim
    now = now_us()
    until = now + seconds_us(lease_s)
    inserted = db.execute(_CLAIM, (key, request_hash, job_id, until, until))
    if inserted.rowcount == 1:
        return Claim(ClaimState.NEW, job_id)
    # The insert found the key, and our write lock keeps it there.
    ((held_hash, held_job, state, response, expires_at),) = db.execute(_HELD, (key,)).fetchall()
    if expires_at > now:
        return _held_claim(request_hash, held_hash, held_job, state, response)
    # The holder's lease (or the replay window of a finished request) is over: the key is free.
    db.execute(_RECLAIM, (request_hash, job_id, until, until, key))
    return Claim(ClaimState.NEW, job_id)


def _held_claim(
    request_hash: str, held_hash: str, job_id: str, state: str, response: bytes | None
) -> Claim:
    if held_hash != request_hash:
        return Claim(ClaimState.MISMATCH, job_id)
    if state == "done":
        return Claim(ClaimState.DONE, job_id, response)
    return Claim(ClaimState.IN_FLIGHT, job_id)


def _version(db: Db) -> int:
    (row,) = db.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()
    return int(row[0])
