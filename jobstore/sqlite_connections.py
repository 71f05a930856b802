"""The SQLite store's two connections: one on its own thread, and one for inline writes."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from operator import methodcaller
from pathlib import Path
from typing import Any, Final, TypeVar, cast

T = TypeVar("T")
Db = sqlite3.Connection

BUSY_TIMEOUT_S = 5.0  # how long to wait for another process's lock before giving up
# Ask the thread for a checkpoint after this many inline commits, or rows written, whichever
# comes first: about the 1,000 pages of log at which SQLite would checkpoint by itself.
CHECKPOINT_COMMITS: Final = 200
CHECKPOINT_ROWS: Final = 2000
_PRAGMAS = (
    # No busy handler: SQLite's sleeps 1, 2, 5, 10 ms... between tries, a tail of milliseconds
    # on every write that meets another process's lock. ``patiently`` tries again sooner; the
    # inline writer never waits at all.
    "PRAGMA busy_timeout=0",
    # With WAL, NORMAL skips the fsync per commit: a process crash loses nothing, a power cut
    # may lose the last commits but never corrupts the file.
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",  # off by default, per connection
)
_BEGIN = methodcaller("execute", "BEGIN IMMEDIATE")  # what ``patiently`` retries first
_Write = tuple[Callable[[Db], Any], "asyncio.Future[Any]"]

# sqlite3 binds only exact ints, floats and strs directly: any other parameter, None (NULL)
# and bools included, goes through its adapter registry, and one with no adapter there costs
# a raised and cleared AttributeError (the protocol's missing ``__adapt__``). A job row holds
# a dozen NULLs, so that was most of the cost of binding it. C callables that return the value
# itself (``{}.get(None)`` is None) keep the values as they were and skip the exception.
sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))
sqlite3.register_adapter(bool, int)


# Crossing to the thread costs far more than SQLite's work for a small transaction, so a unit
# (a statement, or a transaction of several) crosses once. Write units are group-committed:
# every write unit sent while a transaction runs joins the next one, each in its own
# savepoint, so a unit that fails is undone alone and one commit serves many.
class SqliteThread:
    """Runs whole units of work on one sqlite3 connection owned by one thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskq-sqlite")
        self._conn: Db | None = None
        self._writes: deque[_Write] = deque()  # appended by the loop, taken by the thread
        self._group_sent = False  # a group commit is queued on the thread and not started

    async def run(self, work: Callable[[Db], T], *, write: bool = False) -> T:
        """Run ``work`` on the thread (in a ``BEGIN IMMEDIATE`` transaction if ``write``)."""
        loop = asyncio.get_running_loop()
        # Once sent, the unit runs to its end even if the caller is cancelled: a transaction is
        # never left open halfway, and the next unit queues behind it.
        if not write:
            return await loop.run_in_executor(self._executor, self._read, work)
        future: asyncio.Future[T] = loop.create_future()
        self._writes.append((work, future))
        if not self._group_sent:
            self._group_sent = True
            loop.run_in_executor(self._executor, self._commit_group, loop)
        return await future

    async def close(self) -> None:
        """Close the connection and stop the thread."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close)
        finally:
            self._executor.shutdown(wait=False)

    def _read(self, work: Callable[[Db], T]) -> T:
        return patiently(self._conn or self._open(), work)

    def _commit_group(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run every queued write unit in one transaction, then hand the outcomes to the loop."""
        self._group_sent = False  # units queued from now on need a group of their own
        units = [self._writes.popleft() for _ in range(len(self._writes))]
        if not units:
            return
        outcomes: list[tuple[bool, Any]]
        try:
            conn = self._conn or self._open()
            patiently(conn, _BEGIN)
            outcomes = [_in_savepoint(conn, work, alone=len(units) == 1) for work, _ in units]
            conn.execute("COMMIT")
        except Exception as exc:  # the transaction failed as a whole: so did every unit
            if self._conn is not None:
                # SQLite rolls back by itself after some errors (and a broken connection
                # cannot): the error that got us here is the one to report.
                with suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            outcomes = [(False, exc)] * len(units)
        # One wakeup of the loop for the whole group, not one per unit.
        loop.call_soon_threadsafe(_deliver, [future for _, future in units], outcomes)

    def _open(self) -> Db:
        if sqlite3.sqlite_version_info < (3, 35):
            # A sqlite3.Error, so the store's one seam reports it as a StoreError.
            raise sqlite3.NotSupportedError(
                f"SQLite {sqlite3.sqlite_version} is too old; the job store needs 3.35+ (RETURNING)"
            )
        if str(self._path) != ":memory:":
            self._path.parent.mkdir(parents=True, exist_ok=True)
        # WAL: readers never block the writer, nor it them (the mode sticks to the file).
        self._conn = _connect(self._path, (*_PRAGMAS, "PRAGMA journal_mode=WAL"))
        return self._conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class Busy(Exception):
    """SQLite's write lock was held: run the unit on the store's thread instead."""


# A trip to the thread costs about five times a small transaction (``bench/store.py``), so a
# unit that finds the write lock free runs here; one that finds it held tries again every
# 0.2 ms for up to 2 ms (another process holds it for a fraction of a millisecond, where the
# trip to the thread and its doubling waits cost 1.4 to 1.7 ms), then raises ``Busy`` and goes
# to the thread, which waits patiently. The pauses are real sleeps, leaving the CPU to the
# process holding the lock (the loop's own timers would round them up to 1 ms). Checkpoints
# (milliseconds) stay on the thread.
INLINE_PAUSE_S: Final = 0.0002
INLINE_PATIENCE_S: Final = 0.002


class InlineWriter:
    """A second connection that runs small write transactions on the loop while the lock is free."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: Db | None = None
        self._commits = 0
        self._rows_at_checkpoint = 0

    def write(self, work: Callable[[Db], T]) -> T:
        """Run ``work`` in a ``BEGIN IMMEDIATE`` transaction and commit it; ``Busy`` if still locked after 2 ms."""
        try:
            if self._conn is None:
                # wal_autocheckpoint=0: checkpoints run on the thread (see ``due_checkpoint``).
                pragmas = (*_PRAGMAS, "PRAGMA wal_autocheckpoint=0")
                self._conn = _connect(self._path, pragmas, within=0)
            conn = self._conn
            patiently(
                conn, _BEGIN, within=INLINE_PATIENCE_S, pause=INLINE_PAUSE_S, longest=INLINE_PAUSE_S
            )
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise Busy from exc
            raise
        self._commits += 1
        return result

    def due_checkpoint(self) -> bool:
        """Return whether enough was written since the last checkpoint to ask the thread for one."""
        rows = self._conn.total_changes if self._conn is not None else 0
        if self._commits < CHECKPOINT_COMMITS and rows - self._rows_at_checkpoint < CHECKPOINT_ROWS:
            return False
        self._commits, self._rows_at_checkpoint = 0, rows
        return True

    def close(self) -> None:
        """Close the connection (a later write opens it again)."""
        conn, self._conn = self._conn, None
        self._rows_at_checkpoint = 0
        if conn is not None:
            conn.close()


def _connect(path: Path, pragmas: tuple[str, ...], *, within: float = BUSY_TIMEOUT_S) -> Db:
    # isolation_level=None: no implicit BEGIN, the store opens its own transactions. Each
    # pragma's answer is fetched: an unfinished statement keeps a read snapshot open, and
    # BEGIN IMMEDIATE would then fail with BUSY_SNAPSHOT.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        for pragma in pragmas:
            patiently(conn, functools.partial(_fetch, sql=pragma), within=within)
    except BaseException:
        conn.close()
        raise
    return conn


def _in_savepoint(conn: Db, work: Callable[[Db], Any], *, alone: bool) -> tuple[bool, Any]:
    """Run one unit of a group; a unit that raises is undone alone (its savepoint rolls back)."""
    if alone:  # the transaction is the unit's own: a failure rolls it all back
        return True, work(conn)
    conn.execute("SAVEPOINT unit")
    try:
        result = work(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO unit")
        conn.execute("RELEASE unit")
        return False, exc
    conn.execute("RELEASE unit")
    return True, result


def _deliver(futures: list[asyncio.Future[Any]], outcomes: list[tuple[bool, Any]]) -> None:
    """Resolve each unit's future with its result or its error (on the loop's thread)."""
    for future, (ok, value) in zip(futures, outcomes, strict=True):
        if future.done():  # the caller was cancelled; the unit ran all the same
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def patiently(
    conn: Db,
    work: Callable[[Db], T],
    *,
    within: float = BUSY_TIMEOUT_S,
    pause: float = 0.0001,
    longest: float = 0.005,
) -> T:
    """Run ``work``, trying again while SQLite answers BUSY, for ``within`` seconds at most."""
    # Only for units that have done nothing when BUSY can come: BEGIN, the switch to WAL
    # (processes opening a new file together race to make it), and reads. The waits start at
    # ``pause`` and double up to ``longest``: another process's write usually ends within 1 ms.
    deadline = time.monotonic() + within
    while True:
        try:
            return work(conn)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, longest)


def _fetch(conn: Db, *, sql: str) -> list[Any]:
    return conn.execute(sql).fetchall()
