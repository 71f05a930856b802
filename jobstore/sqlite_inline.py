"""``InlineWriter``: small write transactions run on the event loop's thread while the lock is free.

Handing a unit of work to the connection's thread costs about five times what SQLite spends
on a small transaction (the thread's wakeup, the GIL handed over and back, the loop's wakeup:
``bench/store.py``). So a write that is small, and finds SQLite's write lock free, runs right
here on a second connection of its own instead. It never waits: its busy timeout is zero, and
a unit that finds the lock held (another process writing, or the store's thread) is handed back
for the thread, which waits patiently. Checkpoints, which copy the write-ahead log into the
database file and may take milliseconds, are left to the thread as well.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Final, TypeVar

T = TypeVar("T")

# Ask the thread for a checkpoint after this many inline commits, or rows written, whichever
# comes first: about the 1,000 pages of log at which SQLite would checkpoint by itself.
CHECKPOINT_COMMITS: Final = 200
CHECKPOINT_ROWS: Final = 2000
_PRAGMAS: Final = (
    "PRAGMA busy_timeout=0",  # never wait on the loop: a held lock sends the unit to the thread
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA wal_autocheckpoint=0",  # checkpoints run on the thread (see ``due_checkpoint``)
)


class Busy(Exception):
    """SQLite's write lock was held: run the unit on the store's thread instead."""


class InlineWriter:
    """A second connection to the database file, for write transactions that need no waiting."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._commits = 0
        self._rows_at_checkpoint = 0

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in a ``BEGIN IMMEDIATE`` transaction now, and commit it.

        Raises:
            Busy: the write lock was held; nothing was done.
            sqlite3.Error: ``work`` or the commit failed; the transaction was rolled back.
        """
        conn = self._conn if self._conn is not None else self._open()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                raise Busy from exc
            raise
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException as exc:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and _busy(exc):
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

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit BEGIN; the writer opens its own transactions.
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            for pragma in _PRAGMAS:
                conn.execute(pragma).fetchall()
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn


def _busy(exc: sqlite3.OperationalError) -> bool:
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
