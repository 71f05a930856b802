"""``open_store``: the job store a ``TASKQ_STORE_URL`` names."""

from __future__ import annotations

from jobstore.model import JobStore
from topology.errors import SettingsError

_FORMS = "sqlite:///relative/path.sqlite3, sqlite:////absolute/path.sqlite3 or postgresql://user@host:5432/db"


def open_store(url: str) -> JobStore:
    """Return the store for ``url`` without connecting (the first call connects)."""
    scheme, separator, rest = url.partition("://")
    # Each store is imported when its URL names it: a SQLite user never loads asyncpg.
    if separator and scheme in ("postgresql", "postgres"):
        from jobstore.postgres import PostgresJobStore

        return PostgresJobStore(url)
    if separator and scheme == "sqlite":
        # As in SQLAlchemy: three slashes then a relative path, four for an absolute one.
        if not rest.startswith("/") or len(rest) == 1:
            raise SettingsError(
                f"TASKQ_STORE_URL: a SQLite URL needs a file path and no host; use {_FORMS}"
            )
        from jobstore.sqlite import SqliteJobStore

        return SqliteJobStore(rest[1:])
    # Only the scheme is echoed: the rest of the URL may hold a password.
    raise SettingsError(
        f"TASKQ_STORE_URL: unsupported job store URL scheme {scheme if separator else ''!r}; use {_FORMS}"
    )
