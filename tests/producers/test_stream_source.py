"""Stream sources against the real Redis and RabbitMQ: entries become jobs once, bad ones dead-lettered."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pamqp.commands
import pamqp.frame
import pytest
import redis.asyncio as aioredis

from jobstore.model import JobSearch, JobStatus
from producers.auth.principal import Scope
from producers.backends import Producer, confirmed, open_producer
from producers.frame_tap import _Tap
from producers.publisher import ConfirmedPublisher
from producers.streams.entries import entry_job_id, entry_request
from producers.streams.source import StreamMetrics, StreamSource
from tests.broker import channel
from tests.credentials import bearer, issue_key
from tests.faultproxy import FaultProxy
from tests.helpers import eventually, write_topology
from tests.security.conftest import free_port
from topology.apply import apply_topology
from topology.compiled import CompiledTopology, compile_topology
from topology.errors import JobRejectedError, TopologyFileError
from topology.loader import load_topology, parse_topology
from topology.reserved import stream_producer
from topology.settings import BrokerSettings, load_settings
from topology.spec import StreamSourceSpec

TOPOLOGY = """
groups:
  orders:
    jobs: ["order.#"]
  other:
    jobs: ["other"]
streams:
  shop:
    stream: {prefix}orders
    job: "order.{{event}}"
    event_field: kind
    payload_field: data
    priority: high
    claim_after: 1s
    batch: {batch}
"""
SPEC = StreamSourceSpec(stream="s", job="order.{event}", event_field="kind", payload_field="data")


def test_an_entry_becomes_the_job_its_mapping_declares():
    made = entry_request("shop", SPEC, "1-0", {b"kind": b"paid", b"data": b'{"n": 1}'})
    assert not isinstance(made, JobRejectedError)
    assert (made.type, made.payload, made.job_id, made.idempotency_key, made.source) == (
        "order.paid",
        {"n": 1},
        entry_job_id("shop", "s", "1-0"),
        None,  # no key to claim: the job's id is the entry's
        "stream:shop",
    )
    whole = StreamSourceSpec(stream="s", job="other")
    made = entry_request("shop", whole, "2-0", {b"a": b"1", b"b": b"x"})
    assert not isinstance(made, JobRejectedError)
    assert made.payload == {"a": "1", "b": "x"}


def test_an_entrys_job_id_is_a_uuid7_in_entry_order_unique_to_source_and_stream():
    entries = ["1718000000000-0", "1718000000000-1", "1718000000000-5000", "1718000000001-0"]
    ids = [entry_job_id("shop", "s", entry) for entry in entries]
    assert ids == sorted(ids)  # a sequence past the 12-bit counter keeps its millisecond's place
    assert len(set(ids)) == 4
    made = uuid.UUID(ids[0])
    assert (made.version, made.variant, made.int >> 80) == (7, uuid.RFC_4122, 1718000000000)
    others = {entry_job_id("mail", "s", entries[0]), entry_job_id("shop", "t", entries[0])}
    assert ids[0] not in others
    assert len(others) == 2
    assert entry_job_id("shop", "s", entries[0]) == ids[0]  # read again: the same job


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({b"data": b"{}"}, "no 'kind' field"),
        ({b"kind": b"paid"}, "no 'data' field"),
        ({b"kind": b"paid", b"data": b"{nope"}, "is not JSON"),
        ({b"kind": b"not a word!", b"data": b"1"}, "does not make a job type"),
        ({b"kind": b"\xff", b"data": b"1"}, "not UTF-8"),
    ],
)
def test_an_entry_that_makes_no_job_says_why(fields, reason):
    made = entry_request("shop", SPEC, "1-0", fields)
    assert isinstance(made, JobRejectedError)
    assert reason in str(made)


def refusal(text: str) -> str:
    with pytest.raises(TopologyFileError) as caught:
        parse_topology(text)
    return str(caught.value)


def test_a_stream_source_is_checked_like_a_webhook_source():
    text = refusal(
        """
        groups: {orders: {jobs: ["order.#"]}}
        streams:
          shop: {stream: s, job: "order.{event}"}
          slow: {stream: s, job: "order.x", claim_after: 10ms}
          loop: {stream: s, job: "order.x", dead_letter: s}
        """
    )
    assert "no event_field" in text
    assert "claim_after 10ms is below 1s" in text
    assert "dead_letter must be another stream" in text
    text = refusal(
        """
        groups: {orders: {jobs: ["order.#"]}, all: {jobs: ["#.x"]}}
        streams:
          Bad: {stream: s, job: "nobody.{event}", event_field: k}
          mine: {stream: s, job: "order.x.x"}
        schedules:
          nightly: {job: order.x.x, every: 1h}
        """
    )
    assert "'Bad' is not a valid source name" in text
    assert "no group takes job type 'nobody.push'" in text
    # A group reaching into a source's types as well as public ones is refused, as for webhooks.
    assert "only the stream source 'mine' produces these types" in text
    assert "schedules.nightly.job" in text  # a schedule may not make a source's types either


async def test_the_frame_tap_sees_the_broker_block_and_unblock_publishers():
    class Inner:
        def __init__(self) -> None:
            self.received = b""

        def data_received(self, data: bytes) -> None:
            self.received += data

    inner = Inner()
    tap = _Tap(inner, {})  # type: ignore[arg-type]
    blocked = pamqp.frame.marshal(pamqp.commands.Connection.Blocked("low on memory"), 0)
    unblocked = pamqp.frame.marshal(pamqp.commands.Connection.Unblocked(), 0)
    tap.data_received(blocked)
    assert (tap._alarm.blocked, tap._alarm.reason) == (True, "low on memory")
    tap.data_received(unblocked)
    assert tap._alarm.blocked is False
    assert inner.received == blocked + unblocked  # aiormq sees them all the same


@dataclass
class Shop:
    redis: aioredis.Redis
    producer: Producer[ConfirmedPublisher]
    topology: CompiledTopology
    broker: BrokerSettings
    env: dict[str, str]
    stream: str

    @property
    def spec(self) -> StreamSourceSpec:
        return self.topology.stream("shop")

    async def add(self, count: int, **fields: str) -> list[str]:
        ids = []
        for n in range(count):
            entry = {"kind": "paid", "data": orjson.dumps({"n": n}).decode()} | fields
            ids.append((await self.redis.xadd(self.stream, entry)).decode())
        return ids

    async def pending(self) -> int:
        summary = await self.redis.xpending(self.stream, "taskq")
        return int(summary["pending"])

    async def unread(self) -> int:
        [group] = await self.redis.xinfo_groups(self.stream)
        return int(group["lag"] or 0)

    def job_id(self, entry_id: str) -> str:
        return entry_job_id("shop", self.stream, entry_id)

    def source(self, consumer: str = "test-1", publisher=None, metrics=None) -> StreamSource:
        settings = load_settings(self.env).streams
        return StreamSource(
            "shop",
            self.spec,
            consumer,
            self.redis,
            self.producer.submitter,
            publisher or self.producer.publisher,
            settings,
            metrics or StreamMetrics(),
        )


@asynccontextmanager
async def shop_stack(
    applied: BrokerSettings,
    tmp_path: Path,
    redis_url: str,
    prefix: str,
    *,
    amqp_url: str | None = None,
    batch: int = 100,
) -> AsyncIterator[Shop]:
    path = write_topology(tmp_path, TOPOLOGY.format(prefix=prefix, batch=batch))
    topology = compile_topology(load_topology(path))
    await apply_topology(topology, applied)
    env = {
        "TASKQ_TOPOLOGY": str(path),
        "TASKQ_AMQP_URL": amqp_url or applied.amqp_url.get_secret_value(),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        "TASKQ_REDIS_URL": redis_url,
        "TASKQ_STREAM_BLOCK": "0.2",
        "TASKQ_STREAM_RETRY_INTERVAL": "0.2",
        "TASKQ_CONFIRM_TIMEOUT": "3",
    }
    producer = await open_producer(load_settings(env), confirmed("stream test"))
    redis = aioredis.Redis.from_url(redis_url)
    try:
        shop = Shop(redis, producer, topology, applied, env, f"{prefix}orders")
        await shop.source().ensure_group()
        yield shop
    finally:
        await redis.aclose()
        await producer.close()


@asynccontextmanager
async def running(source: StreamSource) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def queued_ids(broker: BrokerSettings, queue: str) -> list[str]:
    """Return the job ids of the messages waiting on ``queue``, leaving them there."""
    ids = []
    async with channel(broker) as ch:
        q = await ch.get_queue(queue, ensure=False)
        while (message := await q.get(no_ack=False, fail=False)) is not None:
            ids.append(str(message.message_id))
    return ids


@pytest.mark.rabbitmq
async def test_entries_become_jobs_and_bad_ones_go_to_the_dead_letter_stream(
    applied, tmp_path, redis_url, redis_prefix
):
    async with shop_stack(applied, tmp_path, redis_url, redis_prefix) as shop:
        good = await shop.add(5)
        bad = [
            *(await shop.add(1, data="{not json")),
            (await shop.redis.xadd(shop.stream, {"data": "{}"})).decode(),  # no kind
            *(await shop.add(1, kind="nobody")),  # order.nobody: routed, so a job
            (await shop.redis.xadd(shop.stream, {"kind": b"\xff", "data": "1"})).decode(),
        ]
        async with running(shop.source()):

            async def drained() -> bool:
                return await shop.unread() == 0 and await shop.pending() == 0

            await eventually(drained, within=10)
        store = shop.producer.submitter.store
        await shop.producer.submitter.settle()
        jobs = (await store.list_jobs(JobSearch(limit=50))).jobs
        by_id = {job.id: job for job in jobs}
        assert set(by_id) == {shop.job_id(entry) for entry in [*good, bad[2]]}
        first = by_id[shop.job_id(good[0])]
        assert (first.type, first.priority.value, first.payload, first.status) == (
            "order.paid",
            "high",
            {"n": 0},
            JobStatus.QUEUED,
        )
        assert sorted(await queued_ids(shop.broker, "taskq.orders")) == sorted(j.id for j in jobs)
        dead = await shop.redis.xrange(shop.spec.dead_letter_stream)
        letters = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in dead]
        assert [letter["entry_id"] for letter in letters] == [bad[0], bad[1], bad[3]]
        assert "is not JSON" in letters[0]["reason"]
        assert "no 'kind' field" in letters[1]["reason"]
        assert "not UTF-8" in letters[2]["reason"]
        assert orjson.loads(letters[1]["fields"]) == {"data": "{}"}
        assert {letters[0]["stream"], letters[0]["group"]} == {shop.stream, "taskq"}


@pytest.mark.rabbitmq
async def test_a_reader_that_stops_holding_nothing_leaves_the_group_and_one_holding_entries_stays(
    applied, tmp_path, redis_url, redis_prefix
):
    async with shop_stack(applied, tmp_path, redis_url, redis_prefix) as shop:
        await shop.add(3)
        async with running(shop.source("leaving")):

            async def drained() -> bool:
                return await shop.unread() == 0 and await shop.pending() == 0

            await eventually(drained, within=10)
        names = [c["name"] for c in await shop.redis.xinfo_consumers(shop.stream, "taskq")]
        assert b"leaving" not in names  # a reader scaled away leaves no name behind
        await shop.add(1)
        await shop.redis.xreadgroup("taskq", "holding", {shop.stream: ">"}, count=10)
        await shop.source("holding")._leave()
        names = [c["name"] for c in await shop.redis.xinfo_consumers(shop.stream, "taskq")]
        assert names == [b"holding"]  # its entry is read again or claimed, never dropped
        assert await shop.pending() == 1


@pytest.mark.rabbitmq
async def test_entries_a_dead_reader_left_pending_are_claimed(
    applied, tmp_path, redis_url, redis_prefix
):
    async with shop_stack(applied, tmp_path, redis_url, redis_prefix) as shop:
        ids = await shop.add(3)
        # A reader that took them and died before acknowledging any.
        await shop.redis.xreadgroup("taskq", "ghost", {shop.stream: ">"}, count=10)
        assert await shop.pending() == 3
        async with running(shop.source("alive")):

            async def claimed() -> bool:
                return await shop.pending() == 0

            await eventually(claimed, within=10)  # claim_after 1s
        await shop.producer.submitter.settle()
        jobs = (await shop.producer.submitter.store.list_jobs(JobSearch(limit=10))).jobs
        assert sorted(j.id for j in jobs) == sorted(map(shop.job_id, ids))


@pytest.mark.rabbitmq
async def test_an_entry_read_again_after_its_job_was_published_is_not_published_again(
    applied, tmp_path, redis_url, redis_prefix
):
    async with shop_stack(applied, tmp_path, redis_url, redis_prefix) as shop:
        claimed, own = await shop.add(2)
        submitter = shop.producer.submitter
        published = []
        # Two readers each read an entry and published its job, then died before the XACK:
        # another reader claims the first entry; the second's reader restarts and reads it again.
        for reader, entry_id in (("ghost", claimed), ("alive", own)):
            [[_, [(_, fields)]]] = await shop.redis.xreadgroup(
                "taskq", reader, {shop.stream: ">"}, count=1
            )
            request = entry_request("shop", shop.spec, entry_id, fields)
            assert not isinstance(request, JobRejectedError)
            [done] = await submitter.submit_many([request], producer=stream_producer("shop"))
            assert not isinstance(done, Exception)
            published.append(done.job_id)
        await submitter.settle()
        assert await shop.pending() == 2
        metrics = StreamMetrics()
        async with running(shop.source("alive", metrics=metrics)):

            async def acknowledged() -> bool:
                return await shop.pending() == 0

            await eventually(acknowledged, within=10)  # claim_after 1s
        jobs = (await submitter.store.list_jobs(JobSearch(limit=10))).jobs
        assert (
            sorted(j.id for j in jobs)
            == sorted(published)
            == sorted(map(shop.job_id, [claimed, own]))
        )
        # Each job is on the broker once: the entries read again published nothing more.
        assert sorted(await queued_ids(shop.broker, "taskq.orders")) == sorted(published)
        counted = metrics.entries.labels
        assert counted("shop", "replayed")._value.get() == 2
        assert counted("shop", "accepted")._value.get() == 0


@pytest.mark.rabbitmq
async def test_the_source_stops_reading_while_the_broker_blocks_publishers(
    applied, tmp_path, redis_url, redis_prefix
):
    proxy = FaultProxy(("127.0.0.1", 5672))
    proxy.start()
    try:
        url = applied.amqp_url.get_secret_value().replace(":5672/", f":{proxy.port}/")
        async with shop_stack(applied, tmp_path, redis_url, redis_prefix, amqp_url=url) as shop:
            metrics = StreamMetrics()
            source = shop.source()
            source._paused = metrics.paused.labels("shop")
            async with running(source):
                await asyncio.to_thread(
                    proxy.inject,
                    pamqp.frame.marshal(pamqp.commands.Connection.Blocked("memory alarm"), 0),
                )

                async def paused() -> bool:
                    return metrics.paused.labels("shop")._value.get() == 1

                await eventually(paused, within=5, every=0.05)
                await shop.add(3)
                await asyncio.sleep(0.5)  # time it would need to read them, were it reading
                assert await shop.unread() == 3
                await asyncio.to_thread(
                    proxy.inject, pamqp.frame.marshal(pamqp.commands.Connection.Unblocked(), 0)
                )

                async def drained() -> bool:
                    return await shop.unread() == 0 and await shop.pending() == 0

                await eventually(drained, within=10)
    finally:
        await asyncio.to_thread(proxy.stop)


KILL_ENTRIES = int(os.environ.get("TASKQ_TEST_STREAM_KILL_ENTRIES", "600"))


def start_source(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "taskctl", "stream", "shop", "--consumer", "kill-test"]
    with log.open("ab") as out:
        return subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=out)


@pytest.mark.rabbitmq
async def test_entries_become_jobs_exactly_once_across_a_sigkill(
    applied, tmp_path, redis_url, redis_prefix
):
    async with shop_stack(applied, tmp_path, redis_url, redis_prefix, batch=50) as shop:
        ids = set(await shop.add(KILL_ENTRIES))
        env = shop.env | {"TASKQ_LOG_FORMAT": "json"}
        log = tmp_path / "source.log"
        source = start_source(env, log)
        try:

            async def partly_read() -> bool:
                return await shop.unread() <= KILL_ENTRIES * 2 // 3

            await eventually(partly_read, within=30, every=0.02)
            source.send_signal(signal.SIGKILL)
            source.wait(10)
            assert await shop.unread() > 0, "the kill came after every entry was read"
            source = start_source(env, log)

            async def drained() -> bool:
                return await shop.unread() == 0 and await shop.pending() == 0

            await eventually(drained, within=40)
            source.send_signal(signal.SIGTERM)
            assert source.wait(15) == 0, log.read_text()[-3000:]
        finally:
            if source.poll() is None:
                source.kill()
                source.wait()
        made = {shop.job_id(entry_id) for entry_id in ids}
        jobs = (await shop.producer.submitter.store.list_jobs(JobSearch(limit=1000))).jobs
        # The store holds no job but the entries' (a row the kill lost before it was written
        # is written by the job's worker, from its message).
        assert {job.id for job in jobs} <= made
        queued = await queued_ids(shop.broker, "taskq.orders")
        # Every entry's job is on the broker, and nothing else: one job per entry, none lost.
        # An entry read again before its job's row was written publishes it again; its worker
        # runs that job id once (a copy after a failed attempt settles, see test_store_runs).
        assert set(queued) == made


@pytest.mark.rabbitmq
async def test_a_reader_serves_its_metrics_on_its_port_to_a_metrics_reader_only(
    applied, tmp_path, redis_url, redis_prefix
):
    async with shop_stack(applied, tmp_path, redis_url, redis_prefix) as shop:
        await shop.add(3)
        port = free_port()
        env = {**os.environ, **shop.env, "TASKQ_STREAM_METRICS_PORT": str(port)}
        command = ["-m", "taskctl", "stream", "shop", "--consumer", "scraped"]
        reader = await asyncio.create_subprocess_exec(
            sys.executable,
            *command,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        store = shop.producer.submitter.store
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            async with httpx.AsyncClient() as http:

                async def drained() -> bool:  # a child process: nothing to await but Redis
                    assert reader.returncode is None, "the reader exited"
                    return await shop.unread() == 0 and await shop.pending() == 0

                await eventually(drained, within=30)
                nobody = await http.get(url)
                admin = bearer(await issue_key(store, scopes=(Scope.ADMIN,)))
                lacking = await http.get(url, headers=admin)
                scraper = bearer(await issue_key(store, scopes=(Scope.METRICS_READ,)))
                scraped = await http.get(url, headers=scraper)
        finally:
            reader.send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                await reader.wait()
        assert nobody.status_code == 401
        assert nobody.headers["www-authenticate"] == 'Bearer realm="taskq"'
        assert lacking.status_code == 403
        assert scraped.status_code == 200
        assert 'taskq_stream_entries_total{outcome="accepted",source="shop"} 3.0' in scraped.text
        assert reader.returncode == 0


@pytest.mark.rabbitmq
async def test_the_backlog_counts_unread_entries_when_redis_cannot_tell_their_number(
    applied, tmp_path, redis_url, redis_prefix
):
    async with shop_stack(applied, tmp_path, redis_url, redis_prefix) as shop:
        ids = await shop.add(20)
        await shop.redis.xreadgroup("taskq", "r1", {shop.stream: ">"}, count=5)
        await shop.redis.xdel(shop.stream, ids[10])  # inside the unread range: no lag now
        [group] = await shop.redis.xinfo_groups(shop.stream)
        assert group["lag"] is None
        metrics = StreamMetrics()
        await shop.source(metrics=metrics)._measure()
        # 14 entries never delivered, 5 delivered and not acknowledged.
        assert metrics.backlog.labels("shop")._value.get() == 19
