"""Stream readers as local processes, scaled by the autoscaler on the real Redis: up on a backlog, back to min, each entry one job."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aio_pika
import pytest
import redis.asyncio as aioredis

from consumers.autoscaler.loop import Autoscaler
from consumers.autoscaler.signals import SignalReader, StreamSignalReader
from taskctl.supervisor import LocalScaler, Supervisor, scaled_spec
from tests.helpers import eventually
from topology.apply import apply_topology
from topology.compiled import compile_topology
from topology.loader import load_topology

pytestmark = pytest.mark.rabbitmq

ENTRIES = 6000
TOPOLOGY = """
groups:
  orders: {{jobs: [order.created], scale: {{min: 0, max: 1, backlog_per_worker: 500}}}}
streams:
  shop:
    stream: "{prefix}orders"
    job: order.created
    batch: 50
    scale: {{min: 1, max: 3, backlog_per_worker: 500, stabilization: 3s}}
"""


async def test_readers_grow_on_a_backlog_share_the_group_and_go_back_to_min(
    vhost, tmp_path: Path, redis_url: str, redis_prefix: str, monkeypatch
):
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY.format(prefix=redis_prefix))
    topology = compile_topology(load_topology(path))
    await apply_topology(topology, vhost)
    env = {
        "TASKQ_TOPOLOGY": str(path),
        "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        "TASKQ_REDIS_URL": redis_url,
        "TASKQ_STREAM_BLOCK": "0.2",
        "TASKQ_GRACE": "20",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the reader processes inherit them
    stream = f"{redis_prefix}orders"
    client = aioredis.Redis.from_url(redis_url)
    async with client.pipeline(transaction=False) as pipe:
        for n in range(ENTRIES):
            pipe.xadd(stream, {"n": str(n)})
        await pipe.execute()

    said: list[str] = []
    supervisor = Supervisor([scaled_spec("stream:shop", 1)], grace=20, say=said.append)
    # The suite itself keeps the CPUs busy.
    local = LocalScaler(supervisor, started={"stream:shop": 1}, idle=lambda: 1.0)
    stop = asyncio.Event()
    began = time.monotonic()
    counts: list[int] = []
    busy: set[str] = set()  # readers seen holding entries of the group
    async with (
        SignalReader(vhost, timeout=5) as management,
        StreamSignalReader(aioredis.Redis.from_url(redis_url)) as backlogs,
    ):
        autoscaler = Autoscaler(
            topology, management, local, groups=[], streams=backlogs, interval=0.5
        )
        running = asyncio.create_task(supervisor.run())
        loop = asyncio.create_task(autoscaler.run(stop))
        try:

            async def at(readers: int) -> bool:
                counts.append(await local.current("stream:shop"))
                return counts[-1] == readers

            await eventually(lambda: at(3), within=30)
            reached_max = time.monotonic() - began

            async def drained() -> bool:
                groups = await client.xinfo_groups(stream)  # none until a reader made it
                if groups:
                    readers = await client.xinfo_consumers(stream, "taskq")
                    busy.update(r["name"].decode() for r in readers if r["pending"])
                return [(g["lag"], g["pending"]) for g in groups] == [(0, 0)]

            await eventually(drained, within=120, every=0.1)
            drained_at = time.monotonic() - began
            await eventually(lambda: at(1), within=60)
            back_at_min = time.monotonic() - began
        finally:
            stop.set()
            await loop
            supervisor.stop()
            code = await running
    left = await client.xinfo_consumers(stream, "taskq")
    await client.aclose()
    published = 0
    connection = await aio_pika.connect(vhost.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        for queue in topology.group("orders").queue_names:
            declared = await channel.declare_queue(queue, passive=True)
            published += declared.declaration_result.message_count or 0
    figures = (
        f"{ENTRIES} entries: 3 readers after {reached_max:.1f}s, drained after "
        f"{drained_at:.1f}s, back to 1 after {back_at_min:.1f}s; "
        f"readers seen holding entries: {sorted(busy)}"
    )
    print(f"\nstream autoscale: {figures}")
    assert code == 0, said
    assert published == ENTRIES, figures  # each entry one job: none lost, none twice
    assert len(busy) >= 2, figures  # more than one reader took entries of the group
    assert left == [], figures  # each reader left the group when it stopped, holding nothing
    assert any("[stream:shop#3] started" in line for line in said), said
    assert any("[stream:shop#3] retired" in line for line in said), said
    # No flapping: the readers only rise to their peak, then only fall.
    changes = [c.desired for c in autoscaler.history]
    peak = changes.index(max(changes))
    assert changes[: peak + 1] == sorted(changes[: peak + 1]), changes
    assert changes[peak:] == sorted(changes[peak:], reverse=True), changes
