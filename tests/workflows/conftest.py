"""Fixtures for the workflow tests: a migrated store on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from jobstore.model import JobStore
from jobstore.postgres import PostgresJobStore
from jobstore.sqlite import SqliteJobStore
from tests.conftest import scratch_database
from tests.helpers import compiled
from topology.apply import apply_topology
from topology.settings import BrokerSettings


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


@asynccontextmanager
async def env_on_store(
    request: pytest.FixtureRequest,
    vhost: BrokerSettings,
    tmp_path: Path,
    topology: str,
    **more: str,
) -> AsyncIterator[dict[str, str]]:
    """Yield the environment of processes on ``topology`` (applied to ``vhost``) and the store ``request.param`` names.

    The store is a SQLite file or a fresh PostgreSQL database; ``more`` are more variables.
    """
    await apply_topology(compiled(topology), vhost)
    (tmp_path / "topology.yaml").write_text(topology)
    base = {
        "TASKQ_TOPOLOGY": str(tmp_path / "topology.yaml"),
        "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(),
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        **more,
    }
    if request.param == "sqlite":
        yield {**base, "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3"}
        return
    async with scratch_database(request.getfixturevalue("postgres_url")) as dsn:
        yield {**base, "TASKQ_STORE_URL": dsn}
