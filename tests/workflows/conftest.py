"""Fixtures for the workflow tests: a migrated store on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobstore.model import JobStore
from jobstore.postgres import PostgresJobStore
from jobstore.sqlite import SqliteJobStore
from tests.conftest import scratch_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    """Return a migrated store on a fresh SQLite file or PostgreSQL database."""
    if request.param == "sqlite":
        store: JobStore = SqliteJobStore(tmp_path / "jobs.sqlite3")
        await store.migrate()
        try:
            yield store
        finally:
            await store.close()
        return
    async with scratch_database(request.getfixturevalue("postgres_url")) as dsn:
        store = PostgresJobStore(dsn)
        await store.migrate()
        try:
            yield store
        finally:
            await store.close()
