"""``SqliteThread``: one sqlite3 connection on one thread, given whole units of work at a time.

Each unit of work (a function of the connection: a statement, or a transaction of several)
crosses to the thread once. Crossing costs far more than SQLite's work for a small
transaction (the event loop's wakeup, and the GIL handed back and forth), so a batch of run
starts is one crossing, not one per statement. The thread is the connection's only user.

Write units are group-committed: every write unit sent while a transaction runs joins the
next one, each inside its own savepoint, so a unit that fails is undone alone while its
neighbours commit. A write transaction (its locks, its WAL frames) costs more than all the
statements of a small unit, and under load one commit now serves many units.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

BUSY_TIMEOUT_S = 5.0  # how long to wait for another process's lock before giving up
_PRAGMAS = (
    # No busy handler: SQLite's sleeps 1, 2, 5, 10 ms... between tries, a tail of milliseconds
    # on every write that meets another process's lock. ``patiently`` tries again sooner.
    "PRAGMA busy_timeout=0",
    # With WAL, NORMAL skips the fsync per commit: a process crash loses nothing, a power cut
    # may lose the last commits but never corrupts the file.
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",  # off by default, per connection
)


class SqliteThread:
    """Runs functions of one sqlite3 connection on the connection's own thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskq-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._writes: deque[_Write] = deque()  # appended by the loop, taken by the thread
        self._group_sent = False  # a group commit is queued on the thread and not started

    async def run(self, work: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
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

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn if self._conn is not None else self._open()
        return patiently(conn, work)

    def _commit_group(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run every queued write unit in one transaction, then hand the outcomes to the loop."""
        self._group_sent = False  # units queued from now on need a group of their own
        units = [self._writes.popleft() for _ in range(len(self._writes))]
        if not units:
            return
        outcomes: list[tuple[bool, Any]]
        try:
            conn = self._conn if self._conn is not None else self._open()
            patiently(conn, _begin)
            outcomes = [_in_savepoint(conn, work, alone=len(units) == 1) for work, _ in units]
            conn.execute("COMMIT")
        except Exception as exc:  # the transaction failed as a whole: so did every unit
            if self._conn is not None:
                _rollback(self._conn)
            outcomes = [(False, exc)] * len(units)
        # One wakeup of the loop for the whole group, not one per unit.
        loop.call_soon_threadsafe(_deliver, [future for _, future in units], outcomes)

    def _open(self) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < (3, 35):
            # A sqlite3.Error, so the store's one seam reports it as a StoreError.
            raise sqlite3.NotSupportedError(
                f"SQLite {sqlite3.sqlite_version} is too old; the job store needs 3.35+ (RETURNING)"
            )
        if str(self._path) != ":memory:":
            self._path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit BEGIN, the store opens its own transactions.
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            for pragma in _PRAGMAS:
                patiently(conn, functools.partial(_fetch, sql=pragma))
            # WAL: readers never block the writer, nor it them (the mode sticks to the file).
            patiently(conn, _wal)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


_Write = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]


def _in_savepoint(
    conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], Any], *, alone: bool
) -> tuple[bool, Any]:
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


def patiently(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work``, trying again while SQLite answers BUSY, until the busy timeout would be over.

    Only units that have done nothing when BUSY can come are given: BEGIN, the switch to WAL
    (processes opening a new file together race to make it), and reads (which change nothing).
    The waits start at 0.1 ms and double up to 5 ms: another process's write transaction
    usually ends within a millisecond.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause = 0.0001
    while True:
        try:
            return work(conn)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.005)


def _fetch(conn: sqlite3.Connection, *, sql: str) -> list[Any]:
    return conn.execute(sql).fetchall()


def _begin(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")


def _wal(conn: sqlite3.Connection) -> None:
    # Fetch the answer (the PRAGMA returns the mode): a statement left unfinished keeps its
    # read snapshot open, and BEGIN IMMEDIATE would then fail with BUSY_SNAPSHOT.
    conn.execute("PRAGMA journal_mode=WAL").fetchall()


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite rolls back by itself after some errors (and a broken connection cannot), so a
    # failing ROLLBACK says nothing new: the error that got us here is the one to report.
    with suppress(sqlite3.Error):
        conn.execute("ROLLBACK")
