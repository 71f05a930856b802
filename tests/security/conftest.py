"""The whole API as ``taskctl serve`` assembles it, on the real broker and a real store.

Every security test goes through these doors: a fresh vhost with the default topology,
SQLite or PostgreSQL, local blobs, and the job, admin and webhook routes together.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from consumers.dispatch import DeadReason, dead
from jobstore.model import JobRecord, JobSearch, JobStatus, JobStore
from producers.api.app import Services
from producers.api.guards import server_config
from producers.auth.principal import Scope
from producers.submit import JobRequest
from taskctl.assembly import api_app, api_services
from tests.broker import channel, depth
from tests.conftest import scratch_database
from tests.credentials import EVERY_SCOPE, bearer, issue_key
from tests.helpers import eventually
from tests.security.stack import Stack, running, stack_env
from tests.security.stack import store_url as fresh_store
from topology.compiled import CompiledTopology
from topology.envelope import decode
from topology.settings import ApiSettings, BrokerSettings, load_settings

GITHUB_SECRET = "It's a Secret to Everybody"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Door:
    """One running API: its app, services, broker vhost and environment."""

    app: FastAPI
    services: Services
    broker: BrokerSettings
    env: dict[str, str]

    @property
    def store(self) -> JobStore:
        return self.services.submitter.store

    @property
    def topology(self) -> CompiledTopology:
        return self.services.submitter.topology

    def client(self, token: str | None = None, **headers: str) -> httpx.AsyncClient:
        """Return an HTTP client of the app, sending ``token`` when given."""
        sent = {**(bearer(token) if token else {}), **headers}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://taskq.test",
            headers=sent,
            timeout=30,
        )

    async def key(
        self,
        *,
        tenant: str = "default",
        scopes: tuple[Scope, ...] = EVERY_SCOPE,
        job_types: tuple[str, ...] | None = None,
    ) -> str:
        return await issue_key(self.store, tenant=tenant, scopes=scopes, job_types=job_types)

    async def published(self) -> dict[str, int]:
        """Return the ready messages of every queue of the topology that holds any."""
        found = {}
        async with channel(self.broker) as ch:
            for queue in self.topology.queues:
                count = await depth(ch, queue.name)
                if count:
                    found[queue.name] = count
        return found

    async def stored(self) -> list[JobRecord]:
        """Return every job in the store, of every tenant."""
        return (await self.store.list_jobs(JobSearch(limit=500))).jobs

    async def snapshot(self) -> tuple[dict[str, int], list[JobRecord]]:
        """Return what the broker holds and what the store holds: a refusal changes neither."""
        return await self.published(), await self.stored()

    async def dead_letter(self, *, job_type: str = "email", tenant: str = "default") -> str:
        """Submit a job of ``tenant`` and move it to its group's DLQ, as a worker would."""
        submitter = self.services.submitter
        done = await submitter.submit(JobRequest(type=job_type, tenant=tenant))
        await submitter.settle()  # as the job's worker would have written its row
        group = submitter.group_of(job_type)
        assert group is not None
        async with channel(self.broker) as ch:
            queue = await ch.get_queue(self.topology.group(group).queue_names[0], ensure=False)
            message = await queue.get(timeout=5)
            envelope = decode(message.body)
            await message.ack()
        decision = dead(
            envelope, DeadReason.PERMANENT, "Permanent: no", group=group, topology=self.topology
        )
        assert self.services.publisher is not None
        await self.services.publisher.publish(decision.envelope, decision.route)
        await self.store.transition(
            done.job_id, JobStatus.DEAD, allowed_from=frozenset({JobStatus.QUEUED})
        )
        return done.job_id


Opener = Callable[..., Any]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Yield a fresh job store URL: a SQLite file, or a scratch PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/jobs.sqlite3"
        return
    async with scratch_database(request.getfixturevalue("postgres_url")) as dsn:
        yield dsn


@pytest.fixture
def open_door(applied: BrokerSettings, tmp_path: Path, store_url: str) -> Opener:
    """Return a factory of running APIs; ``env`` and ``settings`` override the defaults."""

    @asynccontextmanager
    async def opening(
        env: dict[str, str] | None = None, settings: ApiSettings | None = None
    ) -> AsyncIterator[Door]:
        full = {
            "TASKQ_AMQP_URL": applied.amqp_url.get_secret_value(),
            "TASKQ_STORE_URL": store_url,
            "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
            "TASKQ_CONFIRM_TIMEOUT": "5",
            "TASKQ_WEBHOOK_GITHUB_SECRET": GITHUB_SECRET,
            "TASKQ_WEBHOOK_STANDARD_SECRET": STANDARD_SECRET,
            **(env or {}),
        }
        loaded = load_settings(full)
        loaded = loaded.model_copy(update={"api": settings or ApiSettings()})
        services = await api_services(loaded)
        try:
            app = api_app(loaded, services, full)
            yield Door(app, services, applied, full)
        finally:
            if services.close is not None:
                await services.close()

    return opening


@pytest.fixture
async def door(open_door: Opener) -> AsyncIterator[Door]:
    """A running API with the default settings."""
    async with open_door() as opened:
        yield opened


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def serving(door: Door, settings: ApiSettings) -> AsyncIterator[str]:
    """Serve ``door``'s app with uvicorn as ``taskctl serve`` does; yield its ws:// base URL."""
    port = free_port()
    api = settings.model_copy(update={"port": port})
    config = server_config(door.app, api)
    config.lifespan = "off"  # the door's services are running already
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:

        async def started() -> bool:  # uvicorn offers no event to await
            if task.done():
                task.result()  # raises why it stopped
            return bool(server.started)

        await eventually(started, within=10, every=0.01)
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def api_stack(
    request: pytest.FixtureRequest, vhost: BrokerSettings, tmp_path: Path
) -> AsyncIterator[Stack]:
    """Yield the API on a fresh vhost and a fresh job store of each kind (a key sent with every request)."""
    async with (
        fresh_store(request.param, request, tmp_path) as url,
        running(stack_env(vhost, tmp_path, url), vhost) as stack,
    ):
        yield stack
