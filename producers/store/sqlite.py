"""``SqliteJobStore``: the ``JobStore`` port on one embedded SQLite file (the one-machine default).

One connection serves the whole process, so an ``asyncio.Lock`` keeps each unit of work
(a statement, or a ``BEGIN IMMEDIATE`` transaction) to itself: aiosqlite runs every call on
the connection's thread, and two interleaved transactions on one connection would be one.
``BEGIN IMMEDIATE`` takes SQLite's write lock up front, so writers in other processes wait
(``busy_timeout``) instead of failing halfway, and two racing claims never both see a free key.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from producers.errors import StoreError, StoreUnavailableError
from producers.store import sqlite_breakers
from producers.store.listing import ListingQuery
from producers.store.migrations import load_migrations, pending, sqlite_statements
from producers.store.model import (
    BreakerRecord,
    Claim,
    ClaimState,
    Execution,
    ExecutionState,
    JobPage,
    JobRecord,
    JobStatus,
    NewJob,
    check_settable,
)
from producers.store.sqlite_rows import COLUMNS, encode, job_values, now_us, record, seconds_us

_BUSY_TIMEOUT_S = 5.0  # how long to wait for another process's lock before giving up
_PRAGMAS = (
    f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}",
    # With WAL, NORMAL skips the fsync per commit: a process crash loses nothing, a power cut
    # may lose the last commits but never corrupts the file.
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",  # off by default, per connection
)
# Primary result codes meaning "the file cannot be used right now": BUSY, LOCKED, NOMEM,
# READONLY, IOERR, FULL, CANTOPEN, PROTOCOL (https://www.sqlite.org/rescode.html).
_UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
_FOREIGN = (sqlite3.Error, OSError, orjson.JSONEncodeError, orjson.JSONDecodeError)
_PURGE_BATCH = 100  # expired keys deleted per completion, so the table stays bounded

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM jobs"
_INSERT = f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"

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
    " WHERE key = ? AND job_id = ? AND state = 'pending'"
)
_PURGE = (
    "DELETE FROM idempotency_keys WHERE key IN"
    f" (SELECT key FROM idempotency_keys WHERE expires_at <= ? LIMIT {_PURGE_BATCH})"
)
# Inside BEGIN IMMEDIATE: takes a free key or one whose lease (or result's ttl) is over; a held
# key returns nothing, and the write lock keeps it as it is for the SELECT that follows.
_CLAIM_EXECUTION = (
    "INSERT INTO executions (key, job_id, state, result, lease_until, expires_at)"
    " VALUES (?, ?, 'pending', NULL, ?, ?) ON CONFLICT (key) DO UPDATE"
    " SET job_id = excluded.job_id, state = 'pending', result = NULL,"
    " lease_until = excluded.lease_until, expires_at = excluded.expires_at"
    " WHERE executions.expires_at <= ? RETURNING job_id"
)
_HELD_EXECUTION = "SELECT job_id, state, result FROM executions WHERE key = ?"
_FINISH = (
    "UPDATE executions SET state = 'done', result = ?, expires_at = ?"
    " WHERE key = ? AND job_id = ? AND state = 'pending'"
)
_PURGE_EXECUTIONS = (
    "DELETE FROM executions WHERE key IN"
    f" (SELECT key FROM executions WHERE expires_at <= ? LIMIT {_PURGE_BATCH})"
)


class SqliteJobStore:
    """Jobs and idempotency keys in a SQLite file, over one aiosqlite connection opened on first use."""

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def path(self) -> Path:
        """Return the database file's path."""
        return self._path

    async def migrate(self) -> int:
        """Apply pending schema migrations, each in its own transaction; return the version."""
        async with self._use(write=True) as db:
            await db.execute(_CREATE_VERSIONS)
            version = await _version(db)
        for migration in pending(load_migrations("sqlite"), version):
            async with self._use(write=True) as db:
                # Another process may have applied it since we looked; the write lock settles it.
                version = await _version(db)
                if version < migration.version:
                    for statement in sqlite_statements(migration.sql):
                        await db.execute(statement)
                    await db.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                        (migration.version, now_us()),
                    )
                    version = migration.version
        return version

    async def close(self) -> None:
        """Close the connection; later calls raise ``StoreError``."""
        async with self._lock, self._translated():
            self._closed = True
            db, self._db = self._db, None
            if db is not None:
                await db.close()

    async def ping(self) -> None:
        """Return when the database file answers; raise ``StoreUnavailableError`` otherwise."""
        async with self._use() as db:
            await db.execute_fetchall("SELECT 1")

    async def create_job(
        self, job: JobRecord, *, claim: tuple[str, str] | None = None, lease_s: float = 60.0
    ) -> Claim:
        """Insert ``job``, first claiming its idempotency key in the same transaction."""
        # Without a claim the insert is one statement, atomic without BEGIN.
        async with self._use(write=claim is not None) as db:
            if claim is not None:
                outcome = await _claim(db, claim, job.id, lease_s)
                if outcome.state is not ClaimState.NEW:
                    return outcome
            await db.execute(_INSERT, job_values(job))
        return Claim(ClaimState.NEW, job.id)

    async def create_jobs(self, items: Sequence[NewJob]) -> list[Claim]:
        """Insert many jobs (claiming their keys first) in one ``BEGIN IMMEDIATE`` transaction."""
        claims: list[Claim] = []
        async with self._use(write=True) as db:
            rows = []
            for item in items:
                claim = Claim(ClaimState.NEW, item.job.id)
                if item.claim is not None:
                    claim = await _claim(db, item.claim, item.job.id, item.lease_s)
                if claim.state is ClaimState.NEW:
                    rows.append(job_values(item.job))
                claims.append(claim)
            # One statement for every insert: the per-call hop to the connection's thread is
            # what a row costs here, far more than SQLite's work for it.
            await db.executemany(_INSERT, rows)
        return claims

    async def complete_claim(self, key: str, job_id: str, response: bytes, *, ttl_s: float) -> None:
        """Mark the key's request done, keep ``response`` for ``ttl_s`` seconds, purge expired keys."""
        now = now_us()
        # Two autocommit statements: the purge is housekeeping, it need not be atomic with the update.
        async with self._use() as db:
            await db.execute(_COMPLETE, (response, now + seconds_us(ttl_s), key, job_id))
            await db.execute(_PURGE, (now,))

    async def abandon_job(self, job_id: str, key: str | None) -> None:
        """Delete a job that never reached the broker, and free its key if the key is still its."""
        async with self._use(write=True) as db:
            if key is not None:
                await db.execute(
                    "DELETE FROM idempotency_keys WHERE key = ? AND job_id = ?", (key, job_id)
                )
            await db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    async def get_job(self, job_id: str) -> JobRecord | None:
        """Return the job, or ``None`` when there is no such job."""
        async with self._use() as db:
            rows = await db.execute_fetchall(f"{_SELECT} WHERE id = ?", (job_id,))
            return next((record(row) for row in rows), None)

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Return jobs newest first (by UUIDv7 id), filtered, ``limit`` per page, after ``cursor``.

        Raises:
            ValueError: ``limit`` is below 1.
        """
        query = ListingQuery.build(
            status=status, job_type=type, cursor=cursor, limit=limit, placeholder=lambda _: "?"
        )
        async with self._use() as db:
            rows = await db.execute_fetchall(f"{_SELECT}{query.where}", query.params)
        return query.page([record(row) for row in rows])

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
        # One statement is atomic on its own: the status test and the update cannot be split.
        async with self._use() as db:
            values = [encode(name, value) for name, value in fields.items()]
            params = (to.value, *values, job_id, *(s.value for s in allowed_from))
            rows = await db.execute_fetchall(sql, params)
            return next((record(row) for row in rows), None)

    async def claim_execution(self, key: str, job_id: str, *, lease_s: float) -> Execution:
        """Claim the right to run ``key``'s effects for ``lease_s`` seconds (``BEGIN IMMEDIATE``)."""
        now = now_us()
        until = now + seconds_us(lease_s)
        async with self._use(write=True) as db:
            taken = await db.execute_fetchall(_CLAIM_EXECUTION, (key, job_id, until, until, now))
            if taken:
                return Execution(ExecutionState.NEW, job_id)
            # The upsert found a live claim, and our write lock keeps it there.
            ((held_job, state, result),) = await db.execute_fetchall(_HELD_EXECUTION, (key,))
            if state == "done":
                return Execution(ExecutionState.DONE, held_job, orjson.loads(result))
        return Execution(ExecutionState.HELD, held_job)

    async def finish_execution(self, key: str, job_id: str, result: Any, *, ttl_s: float) -> None:
        """Mark ``key``'s effects done with ``result`` while ``job_id`` holds the claim; purge expired."""
        now = now_us()
        # Two autocommit statements: the purge is housekeeping, it need not be atomic with the update.
        async with self._use() as db:
            encoded = orjson.dumps(result).decode()
            await db.execute(_FINISH, (encoded, now + seconds_us(ttl_s), key, job_id))
            await db.execute(_PURGE_EXECUTIONS, (now,))

    async def release_execution(self, key: str, job_id: str) -> None:
        """Drop ``job_id``'s pending claim on ``key``, so the next attempt can claim it."""
        async with self._use() as db:
            await db.execute(
                "DELETE FROM executions WHERE key = ? AND job_id = ? AND state = 'pending'",
                (key, job_id),
            )

    async def count_delivery(self, job_id: str) -> int:
        """Add one to the job's delivery count and return it (0 for an unknown job)."""
        # One statement is atomic on its own: concurrent deliveries never lose a count.
        async with self._use() as db:
            rows = await db.execute_fetchall(
                "UPDATE jobs SET deliveries = deliveries + 1 WHERE id = ? RETURNING deliveries",
                (job_id,),
            )
            return next((int(row[0]) for row in rows), 0)

    @asynccontextmanager
    async def _use(self, *, write: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """Hold the connection for one unit of work, in a ``BEGIN IMMEDIATE`` transaction if ``write``."""
        async with self._lock, self._translated():
            db = await self._connection()
            if not write:
                yield db
                return
            try:
                # Inside the try: if we are cancelled while BEGIN waits for another process's
                # lock, it still runs on the connection's thread, and the ROLLBACK queued
                # behind it must undo it, or the connection would stay in a transaction.
                await _patiently(db, "BEGIN IMMEDIATE")
                yield db
                await db.execute("COMMIT")
            except BaseException:
                await _rollback(db)
                raise

    @asynccontextmanager
    async def _translated(self) -> AsyncIterator[None]:
        """Turn sqlite3, OS and JSON errors into ``StoreError`` (the one seam for foreign errors)."""
        try:
            yield
        except _FOREIGN as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if isinstance(exc, OSError) or (code is not None and code & 0xFF in _UNAVAILABLE_CODES):
                raise StoreUnavailableError(
                    f"the SQLite job store {self._path} is unavailable: {exc}"
                ) from exc
            raise StoreError(f"the SQLite job store {self._path} failed: {exc}") from exc

    async def _connection(self) -> aiosqlite.Connection:
        if self._closed:
            raise StoreError("the job store is closed")
        if self._db is None:
            self._db = await self._open()
        return self._db

    async def _open(self) -> aiosqlite.Connection:
        if sqlite3.sqlite_version_info < (3, 35):
            raise StoreError(
                f"SQLite {sqlite3.sqlite_version} is too old; the job store needs 3.35+ (RETURNING)"
            )
        if str(self._path) != ":memory:":
            self._path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit BEGIN, the store opens its own transactions.
        db = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            for pragma in _PRAGMAS:
                await db.execute_fetchall(pragma)
            # WAL: readers never block the writer, nor it them (the mode sticks to the file).
            await _patiently(db, "PRAGMA journal_mode=WAL")
        except BaseException:
            await db.close()
            raise
        return db

    async def record_breaker(self, breaker: BreakerRecord) -> None:
        """Insert or replace the row of ``breaker``'s (group, dependency, worker)."""
        async with self._use() as db:
            await sqlite_breakers.upsert(db, breaker)

    async def list_breakers(self, group: str | None = None) -> list[BreakerRecord]:
        """Return the recorded breakers, of ``group`` only when given, by group, dependency, worker."""
        async with self._use() as db:
            return await sqlite_breakers.select(db, group)

    async def forget_breakers(self, worker: str) -> None:
        """Delete every breaker row of ``worker``."""
        async with self._use() as db:
            await sqlite_breakers.delete_worker(db, worker)


async def _patiently(db: aiosqlite.Connection, sql: str) -> None:
    """Run ``sql``, trying again while SQLite answers BUSY, until the busy timeout would be over."""
    # SQLite answers BUSY at once, skipping the busy handler, when a file changes journal mode
    # under a connection: processes opening a new file together race to switch it to WAL and
    # then to BEGIN. Only the mode switch and BEGIN retry: neither has done anything yet.
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            # Fetch the answer (the PRAGMA returns the mode): a statement left unfinished keeps
            # its read snapshot open, and BEGIN IMMEDIATE would then fail with BUSY_SNAPSHOT.
            await db.execute_fetchall(sql)
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.01)


async def _claim(
    db: aiosqlite.Connection, claim: tuple[str, str], job_id: str, lease_s: float
) -> Claim:
    """Claim the key inside the caller's ``BEGIN IMMEDIATE`` transaction (so no one races us)."""
    key, request_hash = claim
    now = now_us()
    until = now + seconds_us(lease_s)
    inserted = await db.execute(_CLAIM, (key, request_hash, job_id, until, until))
    if inserted.rowcount == 1:
        return Claim(ClaimState.NEW, job_id)
    # The insert found the key, and our write lock keeps it there.
    ((held_hash, held_job, state, response, expires_at),) = await db.execute_fetchall(_HELD, (key,))
    if expires_at > now:
        return _held_claim(request_hash, held_hash, held_job, state, response)
    # The holder's lease (or the replay window of a finished request) is over: the key is free.
    await db.execute(_RECLAIM, (request_hash, job_id, until, until, key))
    return Claim(ClaimState.NEW, job_id)


def _held_claim(
    request_hash: str, held_hash: str, job_id: str, state: str, response: bytes | None
) -> Claim:
    if held_hash != request_hash:
        return Claim(ClaimState.MISMATCH, job_id)
    if state == "done":
        return Claim(ClaimState.DONE, job_id, response)
    return Claim(ClaimState.IN_FLIGHT, job_id)


async def _version(db: aiosqlite.Connection) -> int:
    (row,) = await db.execute_fetchall("SELECT coalesce(max(version), 0) FROM schema_migrations")
    return int(row[0])


async def _rollback(db: aiosqlite.Connection) -> None:
    # SQLite rolls back by itself after some errors (and a broken connection cannot), so a
    # failing ROLLBACK says nothing new: the error that got us here is the one to report.
    with suppress(sqlite3.Error, ValueError):
        await db.execute("ROLLBACK")
