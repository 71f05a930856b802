"""An API app wired to in-memory twins, for fast tests of every status code."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from fastapi import FastAPI

from jobstore.model import JobRecord
from producers.api.app import Services, create_app
from producers.submit import Submitter
from tests.credentials import bearer, new_key
from tests.fakes.blobs import InMemoryBlobStore
from tests.fakes.publisher import InMemoryPublisher
from tests.fakes.store import InMemoryJobStore
from topology.compiled import CompiledTopology
from topology.settings import ApiSettings, SubmitSettings


@dataclass
class Api:
    client: httpx.AsyncClient
    publisher: InMemoryPublisher
    store: InMemoryJobStore
    blobs: InMemoryBlobStore
    services: Services
    services_app: FastAPI
    token: str  # an API key of the default tenant with every scope; the client sends it

    async def stored(self, job_id: str) -> JobRecord | None:
        """Return the job's row once the submitter wrote those it holds behind their confirms."""
        await self.services.submitter.settle()
        return await self.store.get_job(job_id)


def make_api(
    topology: CompiledTopology,
    *,
    submit: SubmitSettings | None = None,
    api: ApiSettings | None = None,
) -> Api:
    publisher = InMemoryPublisher(topology)
    store = InMemoryJobStore()
    blobs = InMemoryBlobStore()
    submitter = Submitter(
        topology, publisher, store, blobs, submit or SubmitSettings(claim_check_bytes=1024)
    )
    services = Services(submitter)
    app = create_app(services, api or ApiSettings(max_body_bytes=64 * 1024))
    key = new_key()
    store.api_keys[key.record.id] = key.record
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://taskq.test",
        headers=bearer(key.token),
    )
    return Api(client, publisher, store, blobs, services, app, key.token)


def now() -> datetime:
    return datetime.now(UTC)
