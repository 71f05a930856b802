"""The whole API (jobs, webhooks, /admin/dlq) on the real broker and a real job store, for attacks.

Each attack asserts its exact refusal and then that nothing happened behind it: no message
on any queue of the vhost, no job in the store.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from jobstore.model import JobRecord, JobSearch, JobStore, open_store
from producers.submit import Submitter
from taskctl.assembly import api_app
from tests.broker import channel, depth
from tests.conftest import scratch_database
from tests.credentials import bearer, issue_key
from topology.apply import apply_topology
from topology.compiled import CompiledTopology, compile_topology
from topology.loader import load_topology
from topology.settings import ApiSettings, BrokerSettings, load_settings

TOPOLOGY = """
delays: {resolution: 250ms, longest: 1m}
groups:
  work:
    jobs: ["work.#"]
    timeout: 5s
    retry: {max_attempts: 2, base: 250ms, factor: 2, max: 1s, jitter: none}
  github: {jobs: ["github.#"]}
  hooks: {jobs: ["webhook.#", "acme.#"]}
  callbacks:
    jobs: [taskq.callback]
    timeout: 5s
    retry: {max_attempts: 2, base: 250ms, factor: 2, max: 1s, jitter: none}
webhooks:
  github: {scheme: github, secret_env: GH_SECRET, job: "github.{event}"}
  standard: {scheme: standard, secret_env: STD_SECRET, job: "webhook.{event}"}
  acme:
    scheme: hmac
    secret_env: ACME_SECRET
    header: X-Acme-Signature
    prefix: "sha256="
    timestamp_header: X-Acme-Timestamp
    id_header: X-Acme-Delivery
    event_header: X-Acme-Event
    job: "acme.{event}"
"""

GITHUB_SECRET = "It's a Secret to Everybody"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ACME_SECRET = "acme-shared-secret"
SIGNING_KEY = "callback-master-key"


@dataclass
class Stack:
    """A running API app, its settings, and handles to look behind it."""

    client: httpx.AsyncClient
    env: dict[str, str]
    broker: BrokerSettings
    topology: CompiledTopology
    store: JobStore
    app: FastAPI

    @property
    def submitter(self) -> Submitter:
        """Return the app's submitter."""
        return self.app.state.services.submitter  # type: ignore[no-any-return]

    async def depths(self) -> dict[str, int]:
        """Return the ready count of every queue the topology declares."""
        async with channel(self.broker) as ch:
            return {q.name: await depth(ch, q.name) for q in self.topology.queues}

    async def occupied(self) -> dict[str, int]:
        """Return the queues that hold messages, with how many."""
        return {name: n for name, n in (await self.depths()).items() if n}

    async def messages(self) -> int:
        """Return how many messages wait on all the queues together."""
        return sum((await self.depths()).values())

    async def jobs(self) -> list[JobRecord]:
        """Return every job the store holds, once the API wrote the rows it holds behind confirms."""
        await self.submitter.settle()
        return (await self.store.list_jobs(JobSearch(limit=500))).jobs


def stack_env(broker: BrokerSettings, tmp_path: Path, store_url: str) -> dict[str, str]:
    """Return the ``TASKQ_*`` settings of a stack on ``broker``'s vhost and ``store_url``."""
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY)
    return {
        "TASKQ_TOPOLOGY": str(path),
        "TASKQ_AMQP_URL": broker.amqp_url.get_secret_value(),
        "TASKQ_CONFIRM_TIMEOUT": "3",
        "TASKQ_STORE_URL": store_url,
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        "GH_SECRET": GITHUB_SECRET,
        "STD_SECRET": STANDARD_SECRET,
        "ACME_SECRET": ACME_SECRET,
    }


@asynccontextmanager
async def store_url(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """Yield the URL of a fresh job store of ``kind`` (sqlite or postgres)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/jobs.sqlite3"
        return
    async with scratch_database(request.getfixturevalue("postgres_url")) as dsn:
        yield dsn


@asynccontextmanager
async def running(env: dict[str, str], broker: BrokerSettings) -> AsyncIterator[Stack]:
    """Run the API as ``taskctl serve`` assembles it: jobs, ``/admin/dlq`` and the webhooks."""
    topology = compile_topology(load_topology(env["TASKQ_TOPOLOGY"]))
    await apply_topology(topology, broker)

    settings = load_settings({**os.environ, **env})  # a test's own TASKQ_CALLBACK_* included
    api = ApiSettings(max_body_bytes=256 * 1024)
    app = api_app(settings.model_copy(update={"api": api}), environ=env)
    store = open_store(env["TASKQ_STORE_URL"])
    async with app.router.lifespan_context(app):
        await store.migrate()
        # Every door needs a credential: the client sends a key with every scope.
        token = await issue_key(store)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://taskq.test", timeout=30, headers=bearer(token)
            ) as client:
                yield Stack(client, env, broker, topology, store, app)
        finally:
            await store.close()
