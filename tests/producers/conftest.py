"""Fixtures for the producers tests: job stores on every backend, a real S3 server, and Cloud Storage and Blob Storage stand-ins."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jobstore.model import JobStore
from jobstore.postgres import PostgresJobStore
from jobstore.sqlite import SqliteJobStore
from tests.cloudblobs import Azurite, GcsEmulator, StandInError
from tests.conftest import scratch_database
from tests.fakes.store import InMemoryJobStore
from tests.s3server import MotoS3Server, S3ServerError
from topology.errors import StoreUnavailableError


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Start a moto S3 server once per session and yield its endpoint URL; fail under CI=true."""
    server = MotoS3Server()
    try:
        endpoint = server.start()
    except S3ServerError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the moto S3 server did not start: {exc}")
        pytest.skip(f"the moto S3 server did not start: {exc}")
    try:
        yield endpoint
    finally:
        server.stop()


def _stand_in(server: GcsEmulator | Azurite, what: str) -> Iterator[str]:
    try:
        endpoint = server.start()
    except StandInError as exc:
        message = f"{what} did not start: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI must install it (deploy/local/env.sh)")
        pytest.skip(message)
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """Start gcp-storage-emulator once per session and yield its endpoint URL; fail under CI=true."""
    yield from _stand_in(GcsEmulator(), "the Cloud Storage emulator")


@pytest.fixture(scope="session")
def azurite_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start Azurite once per session and yield its account's endpoint URL; fail under CI=true."""
    log = tmp_path_factory.mktemp("azurite") / "azurite.log"
    yield from _stand_in(Azurite(log), "Azurite")


@dataclass
class Backend:
    """Opens stores on one fresh database (several stores act like several processes)."""

    make: Callable[[], JobStore]
    make_unreachable: Callable[[], JobStore]
    opened: list[JobStore] = field(default_factory=list)

    def open(self, *, reachable: bool = True) -> JobStore:
        store = self.make() if reachable else self.make_unreachable()
        self.opened.append(store)
        return store

    async def close(self) -> None:
        for store in self.opened:
            await store.close()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        # The unit tests' twin answers to the same contract as the real stores.
        shared = InMemoryJobStore()
        down = InMemoryJobStore()
        outage = StoreUnavailableError("the in-memory store is set to fail")
        outage.__cause__ = ConnectionRefusedError("simulated")
        down.fail_with = outage
        yield Backend(lambda: shared, lambda: down)
        return
    if request.param == "sqlite":
        path = tmp_path / "store" / "jobs.sqlite3"
        # /proc refuses new directories, so the file can never be created.
        opened = Backend(
            lambda: SqliteJobStore(path), lambda: SqliteJobStore("/proc/taskq-none/jobs.sqlite3")
        )
        try:
            yield opened
        finally:
            await opened.close()
        return
    async with scratch_database(request.getfixturevalue("postgres_url")) as dsn:
        nobody = "postgresql://postgres@127.0.0.1:1/postgres"  # port 1: connection refused
        opened = Backend(
            lambda: PostgresJobStore(dsn), lambda: PostgresJobStore(nobody, connect_timeout=2)
        )
        try:
            yield opened
        finally:
            await opened.close()


@pytest.fixture
async def store(backend: Backend) -> JobStore:
    store = backend.open()
    await store.migrate()
    return store
