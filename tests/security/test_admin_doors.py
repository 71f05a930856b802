"""The operator's doors outside the API: the autoscaler and the workers want credentials."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator

import httpx
import pytest

from consumers.autoscaler.loop import Autoscaler, AutoscalerMetrics
from consumers.autoscaler.signals import SignalReader
from producers.auth.principal import Scope
from tests.credentials import bearer
from tests.helpers import eventually
from tests.security.conftest import Door, free_port

pytestmark = pytest.mark.rabbitmq


class Idle:
    async def current(self, group: str) -> int:
        return 1

    async def scale(self, group: str, workers: int) -> None:
        raise AssertionError("nothing scales in this test")


@pytest.fixture
async def autoscaler_url(door: Door) -> AsyncIterator[str]:
    """Serve a real autoscaler's status, checking credentials against the door's store."""
    reader = SignalReader(door.broker, timeout=2)
    metrics = AutoscalerMetrics()
    scaler = Autoscaler(door.topology, reader, Idle(), groups=["email"], metrics=metrics)
    await scaler.step()
    port = free_port()
    runner = await scaler.serve(
        door.services.authenticator,
        host="127.0.0.1",
        port=port,  # type: ignore[arg-type]
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await reader.close()


async def test_the_autoscaler_status_and_metrics_need_their_scopes(
    door: Door, autoscaler_url: str
) -> None:
    jobs_only = await door.key(scopes=(Scope.JOBS_READ, Scope.JOBS_WRITE))
    scraper = await door.key(scopes=(Scope.METRICS_READ,))
    admin = await door.key(scopes=(Scope.ADMIN,))
    async with httpx.AsyncClient(base_url=autoscaler_url) as http:
        for path, scope in (("/status", "admin"), ("/metrics", "metrics:read")):
            nobody = await http.get(path)
            assert nobody.status_code == 401
            assert nobody.headers["www-authenticate"] == 'Bearer realm="taskq"'
            assert nobody.headers["content-type"].startswith("application/problem+json")
            lacking = await http.get(path, headers=bearer(jobs_only))
            assert lacking.status_code == 403
            assert lacking.json()["detail"] == f"this credential lacks the {scope} scope"
        assert (await http.get("/status", headers=bearer(scraper))).status_code == 403
        status = await http.get("/status", headers=bearer(admin))
        assert status.status_code == 200
        assert [g["group"] for g in status.json()["groups"]] == ["email"]
        scraped = await http.get("/metrics", headers=bearer(scraper))
        assert scraped.status_code == 200
        assert "taskq_autoscaler" in scraped.text
        assert (await http.get("/other", headers=bearer("tq_nope"))).status_code == 401


async def test_a_workers_metrics_port_wants_metrics_read(door: Door) -> None:
    port = free_port()
    env = {**os.environ, **door.env, "TASKQ_WORKER_METRICS_PORT": str(port)}
    worker = await asyncio.create_subprocess_exec(
        *[sys.executable, "-c", "from taskctl.cli import main; main()", "worker", "email"],
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        async with httpx.AsyncClient() as http:

            async def listening() -> bool:  # a child process: nothing to await but its port
                assert worker.returncode is None, "the worker exited"
                try:
                    await http.get(url)
                except httpx.TransportError:
                    return False
                return True

            await eventually(listening, within=30)
            nobody = await http.get(url)
            lacking = await http.get(url, headers=bearer(await door.key(scopes=(Scope.ADMIN,))))
            scraper = bearer(await door.key(scopes=(Scope.METRICS_READ,)))
            scraped = await http.get(url, headers=scraper)
    finally:
        worker.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await worker.wait()
    assert nobody.status_code == 401
    assert nobody.headers["www-authenticate"] == 'Bearer realm="taskq"'
    assert lacking.status_code == 403
    assert scraped.status_code == 200
    assert "taskq_" in scraped.text
    assert worker.returncode == 0
