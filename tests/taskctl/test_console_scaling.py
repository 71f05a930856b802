"""The breakers and scaling page: the store's breakers, and the autoscaler's status asked as the session."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from aiohttp import web

from consumers.autoscaler.loop import GroupStatus
from jobstore.model import BreakerRecord
from producers.api.app import Services, create_app
from producers.auth.scopes import Scope
from producers.submit import Submitter
from taskctl.console import console_door
from tests.credentials import issue_key
from tests.fakes.blobs import InMemoryBlobStore
from tests.fakes.publisher import InMemoryPublisher
from tests.fakes.store import InMemoryJobStore
from tests.taskctl.console_client import log_in
from tests.taskctl.test_up import free_port
from topology.compiled import CompiledTopology
from topology.settings import AutoscalerSettings, BrokerSettings


@pytest.fixture
async def status_server() -> AsyncIterator[tuple[int, list[str]]]:
    """Serve ``/status`` as the autoscaler does, noting the credentials it was asked with."""
    asked: list[str] = []
    decided = GroupStatus("email", 2, 4, "backlog 1800 over 500 per worker", backlog=1800)
    held = GroupStatus("github", 1, 1, "held", error="management API unreachable")

    async def status(request: web.Request) -> web.Response:
        asked.append(request.headers.get("Authorization", ""))
        groups = [dataclasses.asdict(s) | {"decided_at": time.time() - 12} for s in (decided, held)]
        return web.json_response({"groups": groups})

    app = web.Application()
    app.router.add_get("/status", status)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port, asked
    finally:
        await runner.cleanup()


async def scaling_page(
    topology: CompiledTopology, store: InMemoryJobStore, autoscaler_port: int
) -> tuple[httpx.Response, str]:
    """Log an admin in and return the scaling page, and the admin's key."""
    submitter = Submitter(topology, InMemoryPublisher(topology), store, InMemoryBlobStore())
    autoscaler = AutoscalerSettings(autoscaler_port=autoscaler_port)
    app = create_app(Services(submitter), own_doors=[console_door(BrokerSettings(), autoscaler)])
    key = await issue_key(store, scopes=(Scope.ADMIN,))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        await log_in(c, key)
        return await c.get("/console/scaling"), key


async def test_the_page_shows_open_breakers_first_and_the_autoscalers_decisions(
    topology: CompiledTopology, status_server: tuple[int, list[str]]
):
    port, asked = status_server
    store = InMemoryJobStore()
    now = datetime.now(UTC)
    await store.record_breaker(BreakerRecord("email", "smtp", "host:1", "closed", 0, now))
    await store.record_breaker(BreakerRecord("github", "api", "host:2", "open", 5, now))
    page, key = await scaling_page(topology, store, port)
    assert page.status_code == 200
    assert asked == [f"Bearer {key}"]  # the autoscaler checks the session's own credential
    scaling, breakers = page.text.split('id="breakers-heading"')
    assert '<td class="attention">4</td>' in scaling  # wanted 4, has 2
    assert "backlog 1800 over 500 per worker" in scaling
    assert "management API unreachable" in scaling
    assert "12s ago" in scaling
    rows = breakers.split("<tbody>")[1].split("</tr>")
    assert '<td class="attention">open</td>' in rows[0]
    assert "<td>closed</td>" in rows[1]


async def test_without_an_autoscaler_the_page_says_so_and_still_shows_breakers(
    topology: CompiledTopology,
):
    page, _ = await scaling_page(topology, InMemoryJobStore(), free_port())  # nobody listens
    assert page.status_code == 200
    assert "no autoscaler answers at" in page.text
    assert "No breaker has opened in a running worker." in page.text
