"""The autoscaler loop: scale actions from signals, and holding while the management API fails."""

from __future__ import annotations

import httpx
from aiohttp import web
from typer.testing import CliRunner

from consumers.autoscaler.loop import Autoscaler, AutoscalerMetrics
from consumers.autoscaler.signals import SignalReader
from producers.auth.authenticator import open_authenticator
from producers.auth.principal import Scope
from taskctl.cli import app
from tests.consumers.autoscaler.fake_management import fake_management, queue_body
from tests.credentials import bearer, issue_key
from tests.fakes.store import InMemoryJobStore
from tests.helpers import table_rows
from topology.compiled import compile_topology
from topology.loader import parse_topology
from topology.settings import AuthSettings

TOPOLOGY = compile_topology(
    parse_topology(
        """
        groups:
          mail: {jobs: ["mail.#"], scale: {min: 1, max: 6, backlog_per_worker: 100, stabilization: 30s}}
        """
    )
)


class Workers:
    """An actuator twin: counts workers and records every action."""

    def __init__(self, count: int = 1) -> None:
        self.count = count
        self.actions: list[int] = []

    async def current(self, group: str) -> int:
        return self.count

    async def scale(self, group: str, workers: int) -> None:
        self.actions.append(workers)
        self.count = workers


async def test_scales_up_holds_through_every_management_failure_and_recovers():
    clock = [1000.0]
    workers = Workers()
    metrics = AutoscalerMetrics()
    async with fake_management() as fake:
        reader = SignalReader(fake.settings(), timeout=0.5)
        autoscaler = Autoscaler(
            TOPOLOGY,
            reader,
            workers,
            groups=["mail"],
            metrics=metrics,
            clock=lambda: clock[0],
        )
        fake.bodies["taskq.mail"] = queue_body(ready=450, unacked=0, consumers=1)
        (status,) = await autoscaler.step()
        assert (status.current, status.desired, status.backlog) == (1, 5, 450)
        assert workers.actions == [5]

        async def server_error(name: str) -> web.StreamResponse:
            return web.Response(status=500, text="boom")

        async def garbage(name: str) -> web.StreamResponse:
            return web.Response(text="<html>not json", content_type="application/json")

        failures = {"500": server_error, "garbage JSON": garbage, "hanging": fake.hang}
        for what, reply in failures.items():
            fake.reply = reply
            clock[0] += 60  # past the stabilization window: only holding keeps the workers
            (held,) = await autoscaler.step()
            assert (held.desired, held.error is not None) == (5, True), what
            assert "management API" in (held.error or ""), what
        assert workers.actions == [5]  # no scale action while the API failed
        errors = metrics.registry.get_sample_value(
            "taskq_autoscaler_management_api_errors_total", {"group": "mail"}
        )
        assert errors == 3
        assert metrics.registry.get_sample_value("taskq_autoscaler_holding", {"group": "mail"}) == 1
        fake.reply = None
        fake.bodies["taskq.mail"] = queue_body(ready=0, unacked=0, consumers=5)
        (recovered,) = await autoscaler.step()
        assert recovered.error is None
        assert recovered.desired == 5  # a full window of real readings before scaling down
        clock[0] += 31
        (down,) = await autoscaler.step()
        assert down.desired == 1
        assert workers.actions == [5, 1]
        # Every change is in the history, with its reason; holding is no change.
        changes = [(c.group, c.current, c.desired, c.error) for c in autoscaler.history]
        assert changes == [("mail", 1, 5, None), ("mail", 5, 1, None)]
        assert all(c.reason for c in autoscaler.history)
        await reader.close()


async def test_an_unreachable_management_api_makes_no_scale_action():
    workers = Workers(2)
    async with fake_management() as fake:
        settings = fake.settings()
    # The fake is gone: its port refuses connections now.
    reader = SignalReader(settings, timeout=0.5)
    autoscaler = Autoscaler(TOPOLOGY, reader, workers, groups=["mail"])
    (status,) = await autoscaler.step()
    assert (status.current, status.desired) == (2, 2)
    assert status.error is not None
    assert workers.actions == []
    await reader.close()


async def test_taskctl_scale_shows_the_autoscalers_status(unused_tcp_port: int, tmp_path):
    workers = Workers()
    metrics = AutoscalerMetrics()
    keys = InMemoryJobStore()
    admin = await issue_key(keys, scopes=(Scope.ADMIN, Scope.METRICS_READ))
    scraper = await issue_key(keys, scopes=(Scope.METRICS_READ,))
    authenticator = open_authenticator(keys, AuthSettings())
    # Not the admin key file of the directory the tests run in.
    env = {"TASKQ_API_KEY": admin, "TASKQ_DATA_DIR": str(tmp_path)}
    async with fake_management() as fake:
        fake.bodies["taskq.mail"] = queue_body(ready=250, unacked=10, consumers=1)
        reader = SignalReader(fake.settings(), timeout=0.5)
        autoscaler = Autoscaler(TOPOLOGY, reader, workers, groups=["mail"], metrics=metrics)
        await autoscaler.step()
        runner = await autoscaler.serve(authenticator, host="127.0.0.1", port=unused_tcp_port)
        try:
            base = f"http://127.0.0.1:{unused_tcp_port}"
            async with httpx.AsyncClient(headers=bearer(scraper)) as client:
                scraped = (await client.get(f"{base}/metrics")).text
                assert (await client.get(f"{base}/status")).status_code == 403
            async with httpx.AsyncClient(headers=bearer(admin)) as client:
                (change,) = (await client.get(f"{base}/status")).json()["history"]
            assert (change["group"], change["current"], change["desired"]) == ("mail", 1, 3)
            assert change["error"] is None
            assert 'taskq_autoscaler_desired_workers{group="mail"} 3.0' in scraped
            result = await _cli(["scale", "--url", f"{base}/status", "--json"], env)
            assert result.exit_code == 0, result.output
            assert '"desired": 3' in result.output
            assert '"backlog": 260' in result.output
            table = await _cli(["scale", "--url", f"{base}/status"], {**env, "COLUMNS": "80"})
            assert max(len(line) for line in table.stdout.splitlines()) <= 80
            (row,) = table_rows(table.stdout)
            assert (row["group"], row["backlog"], row["desired"]) == ("mail", "260", "3")
            stranger = await _cli(
                ["scale", "--url", f"{base}/status"], {"TASKQ_DATA_DIR": str(tmp_path)}
            )
            assert stranger.exit_code == 1
            assert "refused: 401" in stranger.output
        finally:
            await runner.cleanup()
            await reader.close()
    gone = await _cli(["scale", "--url", f"http://127.0.0.1:{unused_tcp_port}/status"], env)
    assert gone.exit_code == 1
    assert "no autoscaler answers" in gone.output


async def _cli(args: list[str], env: dict[str, str]):
    import asyncio

    # The command blocks on HTTP: run it off the loop that serves the status.
    return await asyncio.to_thread(CliRunner().invoke, app, args, env=env)


async def test_the_loop_scales_a_deployment_through_the_kubernetes_actuator(scaler, fake):
    # The loop and the Kubernetes actuator together: the backlog patches spec.replicas.
    topology = compile_topology(
        parse_topology(
            "groups: {email: {jobs: [email], scale: {min: 1, max: 8, backlog_per_worker: 500}}}"
        )
    )
    async with fake_management() as management:
        management.bodies["taskq.email"] = queue_body(ready=2600, unacked=0, consumers=1)
        reader = SignalReader(management.settings(), timeout=0.5)
        (status,) = await Autoscaler(topology, reader, scaler, groups=["email"]).step()
        await reader.close()
    assert (status.current, status.desired) == (1, 6)
    assert fake.replicas[("taskq", "taskq-worker-email")] == 6
    assert (
        "PATCH",
        "/apis/apps/v1/namespaces/taskq/deployments/taskq-worker-email/scale",
    ) in fake.requests


async def test_queue_depths_around_the_work_queue_become_metrics():
    metrics = AutoscalerMetrics()
    async with fake_management() as fake:
        fake.bodies["taskq.mail"] = queue_body(ready=7, unacked=2, consumers=3)
        fake.bodies["taskq.mail.dlq"] = {"name": "taskq.mail.dlq", "messages": 4}
        for tier in TOPOLOGY.tiers:
            fake.bodies[tier.queue] = {"name": tier.queue, "messages": 1}
        reader = SignalReader(fake.settings(), timeout=0.5)
        await Autoscaler(TOPOLOGY, reader, Workers(), metrics=metrics).step()
        await reader.close()
    value = metrics.registry.get_sample_value
    assert value("taskq_queue_messages", {"group": "mail", "kind": "dlq"}) == 4
    assert value("taskq_queue_messages", {"group": "mail", "kind": "ready"}) == 7
    assert value("taskq_queue_messages", {"group": "mail", "kind": "unacked"}) == 2
    assert value("taskq_queue_consumers", {"group": "mail"}) == 3
    tier = TOPOLOGY.tiers[0].label
    assert value("taskq_retry_tier_messages", {"tier": tier}) == 1
    # Delay tiers and DLQs are read for the metrics only: they never count as work.
    assert value("taskq_autoscaler_backlog_messages", {"group": "mail"}) == 9
