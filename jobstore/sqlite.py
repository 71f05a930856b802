"""``SqliteJobStore``: the ``JobStore`` port on one embedded SQLite file (the one-machine default)."""

# Small writes run on the loop while SQLite's lock is free, the rest on a thread of its own
# (``sqlite_connections``). ``BEGIN IMMEDIATE`` takes the write lock up front, so writers in other
# processes wait instead of failing halfway, and two racing claims never both see a free key.
# Times are integer microseconds since the epoch, UTC (exact round trips, integer comparisons).

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from jobstore.model import (
    Claim,
    ClaimState,
    Confirmed,
    NewJob,
)
from jobstore.run_window import RUN_COLUMNS, START_RUN, RunWindowSql
from jobstore.schedule_sql import ScheduleSql
from jobstore.shared_sql import (
    CLAIM_KEY,
    CLEAR_MOVED_ON,
    INSERT_JOB,
    PURGE_BATCH,
    TAKE_UNCONFIRMED,
    Query,
    Talk,
    load_migrations,
    marks,
    sqlite_statements,
)
from jobstore.sqlite_connections import Busy, Db, InlineWriter, SqliteThread, T
from topology.errors import StoreError, StoreUnavailableError

# Primary result codes meaning "the file cannot be used right now": BUSY, LOCKED, NOMEM,
# READONLY, IOERR, FULL, CANTOPEN, PROTOCOL (https://www.sqlite.org/rescode.html).
_UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
_FOREIGN = (sqlite3.Error, OSError, orjson.JSONEncodeError, orjson.JSONDecodeError)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

_INSERT = INSERT_JOB.replace("$", "?")
_UNCONFIRMED = "INSERT INTO unconfirmed (job_id, publish_by) VALUES (?, ?)"
_CONFIRM = "DELETE FROM unconfirmed WHERE job_id = ?"
_CREATE_VERSIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations"
    " (version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL)"
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
_READ_WINDOW = f"SELECT {', '.join(RUN_COLUMNS)}, deliveries, claim_until > $1 FROM jobs"


class SqliteJobStore(RunWindowSql, ScheduleSql):
    """Jobs and idempotency keys in a SQLite file, over one connection opened on first use."""

    # Times are the store's clock (``_now_us``), sent as parameters.
    _start = START_RUN.format(until="$4")
    _claim_key = CLAIM_KEY.format(until="$4", now="$5")
    _clear_moved_on = CLEAR_MOVED_ON.format(now="$1")
    _take_unconfirmed = TAKE_UNCONFIRMED.format(until="$2", now="$3", lock="")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._thread = SqliteThread(self.path)
        # A second connection to ":memory:" would be another database: no inline writes there.
        self._inline = InlineWriter(self.path) if str(path) != ":memory:" else None
        self._checkpoint: asyncio.Task[None] | None = None
        self._closed = False

    async def migrate(self) -> int:
        """Apply pending schema migrations in one transaction; return the version."""

        # Its write lock (BEGIN IMMEDIATE) keeps migrators apart: each file is applied once.
        def apply(db: Db) -> int:
            db.execute(_CREATE_VERSIONS)
            [(current,)] = db.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            for version, sql in load_migrations("sqlite", current).items():
                for statement in sqlite_statements(sql):
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, _now_us()),
                )
                current = version
            return int(current)

        return await self._run(apply, write=True)

    async def close(self) -> None:
        """Close the connection; later calls raise ``StoreError``."""
        if self._closed:
            return
        self._closed = True
        if self._checkpoint is not None:
            await self._checkpoint
        if self._inline is not None:
            self._inline.close()
        try:
            await self._thread.close()
        except _FOREIGN as exc:
            raise self._error(exc) from exc

    async def create_jobs(
        self, items: Sequence[NewJob], *, confirmed: Sequence[Confirmed] = (), durable: bool = True
    ) -> list[Claim]:
        """Insert many jobs (claiming their keys first) in one ``BEGIN IMMEDIATE`` transaction (``durable`` or not: no fsync)."""

        def insert(db: Db) -> list[Claim]:
            now = _now_us()
            if confirmed:
                _confirm(db, confirmed, now)
            claims = _talked(db, self._claiming(items))
            new = [i for i, c in zip(items, claims, strict=True) if c.state is ClaimState.NEW]
            db.executemany(_INSERT, [self._row(i.job) for i in new])
            due = [(i.job.id, now + _us(s)) for i in new if (s := i.confirm_within) is not None]
            db.executemany(_UNCONFIRMED, due)
            return claims

        return await self._write(insert)

    async def confirm_jobs(self, items: Sequence[Confirmed]) -> None:
        """Clear the jobs' publish deadlines and complete their keys' claims in one transaction."""
        await self._write(lambda db: _confirm(db, items, _now_us()))

    def _read_window(self, ids: Sequence[str]) -> Query:
        return Query(f"{_READ_WINDOW} WHERE id IN ({marks(len(ids), 2)})", (_now_us(), *ids))

    def _lease(self, seconds: float) -> tuple[int, int]:
        now = _now_us()
        return now + _us(seconds), now

    async def _talk(self, talk: Talk[T]) -> T:
        """Run the conversation ``talk`` in one write transaction."""
        return await self._write(lambda db: _talked(db, talk))

    async def _write(self, work: Callable[[Db], T]) -> T:
        """Run a small write transaction inline when SQLite's lock is free (or soon), else on the thread."""
        if self._inline is not None and not self._closed:
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
                await self._fetch("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            self._checkpoint = None

    async def _run(self, work: Callable[[Db], T], *, write: bool = False) -> T:
        """Run one unit of work on the connection's thread, translating its errors."""
        if self._closed:
            raise StoreError("the job store is closed")
        try:
            return await self._thread.run(work, write=write)
        except _FOREIGN as exc:
            raise self._error(exc) from exc

    def _error(self, exc: BaseException) -> StoreError:
        """Return the ``StoreError`` that says what a sqlite3, OS or JSON error means."""
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(exc, OSError) or (code is not None and code & 0xFF in _UNAVAILABLE_CODES):
            return StoreUnavailableError(f"the SQLite job store {self.path} is unavailable: {exc}")
        return StoreError(f"the SQLite job store {self.path} failed: {exc}")

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        """Run one statement, its ``$n`` parameters read as SQLite's ``?n``, and return its rows."""
        sql = sql.replace("$", "?")
        return await self._run(lambda db: db.execute(sql, args).fetchall())

    def _time_in(self, when: datetime | None) -> int | None:
        """Return ``when`` in microseconds since the epoch (``None`` stays); integers round-trip exactly."""
        aware = super()._time_in(when)
        return None if aware is None else (aware - _EPOCH) // _MICROSECOND

    def _time_out(self, value: int) -> datetime:
        """Return the time ``value`` microseconds after the epoch."""
        return _EPOCH + value * _MICROSECOND


def _talked(db: Db, talk: Talk[T]) -> T:
    """Run each statement ``talk`` yields on ``db`` (``$n`` read as ``?n``), sending it the rows; its answer."""
    try:
        query = next(talk)
        while True:
            sql = query.sql.replace("$", "?")
            if query.many:
                if query.rows:
                    db.executemany(sql, query.rows)
                query = talk.send([])
            else:
                query = talk.send(db.execute(sql, query.args).fetchall())
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _confirm(db: Db, items: Sequence[Confirmed], now: int) -> None:
    """Clear the items' publish deadlines and complete their keys' claims, in the caller's write."""
    db.executemany(_CONFIRM, [(i.job_id,) for i in items])
    done = [(i.response, now + _us(i.ttl_s), i.job_id) for i in items if i.response is not None]
    if done:
        db.executemany(_COMPLETE, done)
        db.execute(_PURGE, (now,))  # housekeeping: expired keys, a batch at a time


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _now_us() -> int:
    return time.time_ns() // 1000
