"""The breakers and scaling page, and the overview's workers: the store's breakers, the autoscaler's status asked as the session."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiohttp import web

from consumers.autoscaler.loop import GroupStatus, ScalingChange
from jobstore.model import BreakerRecord
from producers.api.app import Services, create_app
from producers.auth.principal import Scope
from producers.submit import Submitter
from taskctl.console import console_door
from tests.credentials import issue_key
from tests.fakes.blobs import InMemoryBlobStore
from tests.fakes.publisher import InMemoryPublisher
from tests.fakes.store import InMemoryJobStore
from tests.taskctl.console_client import log_in
from tests.taskctl.test_console import NOBODY
from tests.taskctl.test_up import free_port
from topology.compiled import CompiledTopology
from topology.settings import AutoscalerSettings, BrokerSettings


@pytest.fixture
async def status_server() -> AsyncIterator[tuple[int, list[str]]]:
    """Serve ``/status`` as the autoscaler does, noting the credentials it was asked with."""
    asked: list[str] = []
    decided = GroupStatus("email", 2, 4, "backlog 1800 over 500 per worker", backlog=1800)
    held = GroupStatus("github", 1, 1, "held", error="management API unreachable")

    moment = time.time()
    changes = [  # newest first, as /status lists them
        ScalingChange(moment - 12, "email", 2, 4, "backlog 1800 over 500 per worker"),
        ScalingChange(moment - 90, "github", 2, 1, "idle", error="actuator: spawn failed"),
    ]

    async def status(request: web.Request) -> web.Response:
        asked.append(request.headers.get("Authorization", ""))
        groups = [dataclasses.asdict(s) | {"decided_at": moment - 12} for s in (decided, held)]
        history = [dataclasses.asdict(c) for c in changes]
        return web.json_response({"groups": groups, "history": history})

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
    topology: CompiledTopology,
    store: InMemoryJobStore,
    autoscaler_port: int,
    path: str = "/console/scaling",
) -> tuple[httpx.Response, str]:
    """Log an admin in and return the page at ``path``, and the admin's key."""
    submitter = Submitter(topology, InMemoryPublisher(topology), store, InMemoryBlobStore())
    autoscaler = AutoscalerSettings(autoscaler_port=autoscaler_port)
    broker = BrokerSettings(management_url=NOBODY, management_timeout=2)
    app = create_app(Services(submitter), own_doors=[console_door(broker, autoscaler)])
    key = await issue_key(store, scopes=(Scope.ADMIN,))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        await log_in(c, key)
        return await c.get(path), key


def body_rows(html: str, table: str) -> list[str]:
    """Return the rows of the body of the table with id ``table``, as HTML."""
    return html.split(f'id="{table}"')[1].split("<tbody>")[1].split("</tbody>")[0].split("</tr>")


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
    changes = body_rows(scaling, "scaling-history")
    assert "email" in changes[0]
    assert "2 → 4" in changes[0]
    assert "done" in changes[0]
    assert "1m30s ago" in changes[1]
    assert "failed: actuator: spawn failed" in changes[1]


async def test_every_breaker_transition_is_listed_newest_first(
    topology: CompiledTopology, status_server: tuple[int, list[str]]
):
    store = InMemoryJobStore()
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    for seconds, state in ((0, "open"), (30, "half_open"), (31, "closed")):
        at = start + timedelta(seconds=seconds)
        await store.record_breaker(BreakerRecord("email", "smtp", "host:1", state, 5, at))
    page, _ = await scaling_page(topology, store, status_server[0])
    history = body_rows(page.text, "breaker-history")
    assert "2026-03-01 12:00:31 UTC" in history[0]
    assert "<td>closed</td>" in history[0]
    assert "<td>half_open</td>" in history[1]
    assert '<td class="attention">open</td>' in history[2]


async def test_the_overview_shows_workers_the_last_decision_and_open_breakers(
    topology: CompiledTopology, status_server: tuple[int, list[str]]
):
    store = InMemoryJobStore()
    now = datetime.now(UTC)
    await store.record_breaker(BreakerRecord("email", "smtp", "host:1", "closed", 0, now))
    await store.record_breaker(BreakerRecord("github", "api", "host:2", "open", 5, now))
    page, _ = await scaling_page(topology, store, status_server[0], "/console/")
    assert page.status_code == 200
    email = page.text.split('<tr data-group="email">')[1].split("</tr>")[0]
    assert '<td class="attention">2 / 4</td>' in email
    assert "backlog 1800 over 500 per worker" in email
    opened = page.text.split('id="open-breakers"')[1].split("</table>")[0]
    assert "host:2" in opened
    assert "host:1" not in opened  # closed: not on the overview


async def test_the_overview_without_an_autoscaler_says_so_and_shows_no_breaker(
    topology: CompiledTopology,
):
    page, _ = await scaling_page(topology, InMemoryJobStore(), free_port(), "/console/")
    assert page.status_code == 200
    assert "Workers and scaling decisions: no autoscaler answers at" in page.text
    assert "None: every dependency's breaker is closed." in page.text


async def test_without_an_autoscaler_the_page_says_so_and_still_shows_breakers(
    topology: CompiledTopology,
):
    page, _ = await scaling_page(topology, InMemoryJobStore(), free_port())  # nobody listens
    assert page.status_code == 200
    assert "no autoscaler answers at" in page.text
    assert "No breaker has opened in a running worker." in page.text
