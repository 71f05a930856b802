"""Stream sources scaled like groups: their backlog read from the real Redis, the same policy, readers up and back to min."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis

from consumers.autoscaler.loop import Autoscaler, AutoscalerMetrics
from consumers.autoscaler.signals import SignalReader, StreamSignalReader
from producers.auth.authenticator import open_authenticator
from producers.auth.principal import Scope
from tests.consumers.autoscaler.fake_management import fake_management
from tests.consumers.autoscaler.test_loop import Workers, _cli
from tests.credentials import bearer, issue_key
from tests.fakes.store import InMemoryJobStore
from tests.helpers import table_rows
from topology.compiled import CompiledTopology, compile_topology
from topology.loader import parse_topology
from topology.settings import AuthSettings
from topology.spec import StreamSourceSpec


def shop(prefix: str, scale: str = "{min: 1, max: 4, backlog_per_worker: 100, stabilization: 30s}"):
    return compile_topology(
        parse_topology(
            f"""
            groups:
              orders: {{jobs: [order.created]}}
            streams:
              shop: {{stream: "{prefix}orders", job: order.created, scale: {scale}}}
            """
        )
    )


def source(topology: CompiledTopology) -> StreamSourceSpec:
    ((_, spec),) = topology.streams
    return spec


async def test_the_backlog_is_the_groups_lag_plus_its_pending_entries(redis_url, redis_prefix):
    clock = [100.0]
    spec = source(shop(redis_prefix))
    client = aioredis.Redis.from_url(redis_url)
    async with StreamSignalReader(client, clock=lambda: clock[0]) as reader:
        nothing = await reader.read(spec)  # no stream yet
        assert (nothing.ready, nothing.unacked) == (0, 0)
        for n in range(250):
            await client.xadd(spec.stream, {"n": str(n)})
        # No group yet: its first reader will create it at the stream's first entry.
        before_group = await reader.read(spec)
        assert (before_group.ready, before_group.unacked) == (250, 0)
        await client.xgroup_create(spec.stream, spec.group, id="0")
        fresh = await reader.read(spec)
        assert (fresh.ready, fresh.unacked, fresh.consumers) == (250, 0, 0)
        answer = await client.xreadgroup(spec.group, "r1", {spec.stream: ">"}, count=40)
        await client.xack(spec.stream, spec.group, *[i for i, _ in answer[0][1][:30]])
        clock[0] += 2
        read = await reader.read(spec)
        # 210 never delivered, 10 delivered and not acknowledged; 40 delivered in 2 s.
        assert (read.ready, read.unacked) == (210, 10)
        assert read.ack_rate == pytest.approx(20.0)
        assert read.publish_rate == 0.0


async def test_a_lag_redis_cannot_tell_is_counted(redis_url, redis_prefix):
    spec = source(shop(redis_prefix))
    client = aioredis.Redis.from_url(redis_url)
    async with StreamSignalReader(client) as reader:
        ids = [await client.xadd(spec.stream, {"n": str(n)}) for n in range(20)]
        await client.xgroup_create(spec.stream, spec.group, id="0")
        await client.xreadgroup(spec.group, "r1", {spec.stream: ">"}, count=5)
        await client.xdel(spec.stream, ids[10])  # inside the unread range: lag is nil now
        groups = await client.xinfo_groups(spec.stream)
        assert groups[0]["lag"] is None
        read = await reader.read(spec)
        assert (read.ready, read.unacked) == (14, 5)


async def test_an_unreachable_redis_holds_the_readers():
    topology = shop("never:")
    readers = Workers(2)
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    async with (
        fake_management() as fake,
        SignalReader(fake.settings(), timeout=0.5) as management,
        StreamSignalReader(client, timeout=1) as backlogs,
    ):
        metrics = AutoscalerMetrics()
        autoscaler = Autoscaler(
            topology, management, readers, groups=[], streams=backlogs, metrics=metrics
        )
        (status,) = await autoscaler.step()
    assert (status.group, status.current, status.desired) == ("stream:shop", 2, 2)
    assert "Redis" in (status.error or "")
    assert readers.actions == []
    errors = metrics.registry.get_sample_value(
        "taskq_autoscaler_redis_errors_total", {"group": "stream:shop"}
    )
    assert errors == 1


async def test_a_backlog_asks_for_more_readers_and_an_empty_stream_lets_them_go_to_min(
    redis_url, redis_prefix, unused_tcp_port, tmp_path
):
    clock = [1000.0]
    topology = shop(redis_prefix)
    spec = source(topology)
    readers = Workers(1)
    metrics = AutoscalerMetrics()
    client = aioredis.Redis.from_url(redis_url)
    keys = InMemoryJobStore()
    admin = await issue_key(keys, scopes=(Scope.ADMIN, Scope.METRICS_READ))
    async with (
        fake_management() as fake,
        SignalReader(fake.settings(), timeout=0.5) as management,
        StreamSignalReader(aioredis.Redis.from_url(redis_url)) as backlogs,
    ):
        autoscaler = Autoscaler(
            topology,
            management,
            readers,
            groups=[],
            streams=backlogs,
            metrics=metrics,
            clock=lambda: clock[0],
        )
        await client.xgroup_create(spec.stream, spec.group, id="0", mkstream=True)
        for n in range(250):
            await client.xadd(spec.stream, {"n": str(n)})
        (up,) = await autoscaler.step()
        assert (up.group, up.current, up.desired, up.backlog) == ("stream:shop", 1, 3, 250)
        assert "backlog 250 / 100 per worker → 3" in up.reason
        for n in range(300):
            await client.xadd(spec.stream, {"n": str(n)})
        clock[0] += 5
        (more,) = await autoscaler.step()
        assert (more.current, more.desired) == (3, 4)  # 550 entries: capped at max 4
        # The readers drain it: every entry read and acknowledged.
        while answer := await client.xreadgroup(spec.group, "r", {spec.stream: ">"}, count=200):
            await client.xack(spec.stream, spec.group, *[i for i, _ in answer[0][1]])
        clock[0] += 5
        (held,) = await autoscaler.step()
        assert (held.backlog, held.desired) == (0, 4)  # within the stabilization window
        assert held.consumers == 4  # the readers running, as the actuator counts them
        clock[0] += 31
        (down,) = await autoscaler.step()
        assert (down.current, down.desired) == (4, 1)
        assert readers.actions == [3, 4, 1]
        value = metrics.registry.get_sample_value
        assert value("taskq_autoscaler_desired_workers", {"group": "stream:shop"}) == 1
        assert value("taskq_autoscaler_backlog_messages", {"group": "stream:shop"}) == 0
        ups = value("taskq_autoscaler_decisions_total", {"group": "stream:shop", "direction": "up"})
        assert ups == 2
        changes = [(c.group, c.current, c.desired) for c in autoscaler.history]
        assert changes == [("stream:shop", 1, 3), ("stream:shop", 3, 4), ("stream:shop", 4, 1)]
        authenticator = open_authenticator(keys, AuthSettings())
        runner = await autoscaler.serve(authenticator, host="127.0.0.1", port=unused_tcp_port)
        try:
            async with httpx.AsyncClient(headers=bearer(admin)) as http:
                status = await http.get(f"http://127.0.0.1:{unused_tcp_port}/status")
            (shown,) = status.json()["groups"]
            assert (shown["group"], shown["desired"], shown["backlog"]) == ("stream:shop", 1, 0)
            env = {"TASKQ_API_KEY": admin, "TASKQ_DATA_DIR": str(tmp_path)}
            url = f"http://127.0.0.1:{unused_tcp_port}/status"
            table = await _cli(["scale", "--url", url], {**env, "COLUMNS": "200"})
            (row,) = table_rows(table.stdout)
            assert (row["group"], row["backlog"], row["current"], row["desired"]) == (
                "stream:shop",
                "0",
                "4",
                "1",
            )
        finally:
            await runner.cleanup()
    await client.aclose()


async def test_on_kubernetes_the_backlog_scales_the_sources_reader_deployment(
    redis_url, redis_prefix, scaler, fake
):
    # The loop, Redis's backlog and the Kubernetes actuator together: spec.replicas is patched.
    topology = shop(redis_prefix, "{min: 1, max: 6, backlog_per_worker: 100}")
    spec = source(topology)
    client = aioredis.Redis.from_url(redis_url)
    for n in range(450):
        await client.xadd(spec.stream, {"n": str(n)})
    await client.xgroup_create(spec.stream, spec.group, id="0")
    fake.replicas[("taskq", "taskq-stream-shop")] = 1
    async with fake_management() as management, StreamSignalReader(client) as streams:
        reader = SignalReader(management.settings(), timeout=0.5)
        autoscaler = Autoscaler(topology, reader, scaler, groups=[], streams=streams)
        (status,) = await autoscaler.step()
        await reader.close()
    assert (status.group, status.current, status.desired) == ("stream:shop", 1, 5)
    assert fake.replicas[("taskq", "taskq-stream-shop")] == 5
