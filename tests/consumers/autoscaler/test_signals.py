import asyncio
import math
import socket
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from pydantic import SecretStr

from consumers.autoscaler.signals import QueueSignals, SignalReader, SignalsUnavailable
from tests.consumers.autoscaler.fake_management import FakeManagement, fake_management, queue_body
from topology.compiled import compile_topology
from topology.errors import ManagementApiError, TaskqError
from topology.loader import parse_topology
from topology.settings import BrokerSettings

TOPOLOGY = compile_topology(
    parse_topology(
        """
        groups:
          mail: {jobs: ["mail.#"]}
          pay: {jobs: ["pay.#"], priority: {strategy: lanes, queue_type: quorum}}
        """
    )
)
MAIL = TOPOLOGY.group("mail")
PAY = TOPOLOGY.group("pay")
URGENT, HIGH, MEDIUM, LOW = PAY.queue_names


@pytest.fixture
async def fake() -> AsyncIterator[FakeManagement]:
    async with fake_management() as server:
        yield server


async def test_a_group_with_one_queue_reads_its_figures_and_rates(fake: FakeManagement):
    stats = {
        "publish": 900,
        "publish_details": {"rate": 12.5},
        "ack": 800,
        "ack_details": {"rate": 10.0},
        "deliver_get_details": {"rate": 99.0},  # ack is reported, so this is not used
    }
    head = time.time() - 30
    fake.bodies[MAIL.queue_names[0]] = queue_body(
        420, 16, 2, message_stats=stats, head_message_timestamp=int(head)
    )
    async with SignalReader(fake.settings()) as reader:
        signals = await reader.read(MAIL)
    assert signals == QueueSignals(
        ready=420,
        unacked=16,
        consumers=2,
        publish_rate=12.5,
        ack_rate=10.0,
        oldest_age=signals.oldest_age,
    )
    assert signals.oldest_age is not None
    assert 29 <= signals.oldest_age <= 32


async def test_only_the_groups_work_queues_are_read_one_get_each(fake: FakeManagement):
    for name in PAY.queue_names:
        fake.bodies[name] = queue_body(1)
    async with SignalReader(fake.settings("v/1")) as reader:
        await reader.read(PAY)
    assert fake.paths == [f"/api/queues/v%2F1/{name}" for name in PAY.queue_names]
    assert not any("dlq" in path or "delay" in path for path in fake.paths)


async def test_lanes_sum_their_figures_and_take_consumers_from_the_most_urgent(
    fake: FakeManagement,
):
    now = time.time()
    fake.bodies = {
        URGENT: queue_body(3, 2, 4, message_stats={"publish_details": {"rate": 1.0}}),
        HIGH: queue_body(0, 0, 3),
        MEDIUM: queue_body(
            10,
            1,
            3,
            head_message_timestamp=now - 100,
            message_stats={"publish_details": {"rate": 2.0}, "ack_details": {"rate": 0.5}},
        ),
        LOW: queue_body(
            7,
            0,
            3,
            head_message_timestamp=now - 500,
            message_stats={"deliver_get_details": {"rate": 4.0}},  # no acks: deliveries count
        ),
    }
    async with SignalReader(fake.settings()) as reader:
        signals = await reader.read(PAY)
    assert (signals.ready, signals.unacked, signals.consumers) == (20, 3, 4)
    assert (signals.publish_rate, signals.ack_rate) == (3.0, 4.5)
    assert signals.oldest_age is not None
    assert 499 <= signals.oldest_age <= 502


async def test_queues_without_stats_or_timestamps_read_as_zero_rates_and_unknown_age(
    fake: FakeManagement,
):
    fake.bodies[MAIL.queue_names[0]] = queue_body(0, head_message_timestamp=None)
    async with SignalReader(fake.settings()) as reader:
        signals = await reader.read(MAIL)
    assert (signals.publish_rate, signals.ack_rate, signals.oldest_age) == (0.0, 0.0, None)


async def test_a_head_timestamp_from_a_clock_ahead_reads_as_age_zero(fake: FakeManagement):
    fake.bodies[MAIL.queue_names[0]] = queue_body(1, head_message_timestamp=time.time() + 3600)
    async with SignalReader(fake.settings()) as reader:
        assert (await reader.read(MAIL)).oldest_age == 0.0


async def test_readings_reuse_one_connection_and_a_closed_reader_reopens(fake: FakeManagement):
    fake.bodies[MAIL.queue_names[0]] = queue_body(1)
    reader = SignalReader(fake.settings())
    for _ in range(5):
        await reader.read(MAIL)
    assert len(fake.peers) == 1
    await reader.close()
    await reader.close()  # closing twice is harmless
    assert (await reader.read(MAIL)).ready == 1
    await reader.close()


async def expect_unavailable(reader: SignalReader, *, within: float) -> SignalsUnavailable:
    started = time.monotonic()
    with pytest.raises(SignalsUnavailable) as info:
        await reader.read(MAIL)
    assert time.monotonic() - started < within
    assert isinstance(info.value, TaskqError)
    assert isinstance(info.value, ManagementApiError)
    return info.value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_refused_connection_is_unavailable_at_once():
    settings = BrokerSettings(management_url=SecretStr(f"http://127.0.0.1:{free_port()}"))
    async with SignalReader(settings, timeout=0.5) as reader:
        error = await expect_unavailable(reader, within=0.5)
    assert "reading group 'mail'" in str(error)
    assert "failed" in str(error)


async def test_a_hanging_api_is_unavailable_within_the_timeout(fake: FakeManagement):
    fake.reply = fake.hang
    async with SignalReader(fake.settings(), timeout=0.5) as reader:
        error = await expect_unavailable(reader, within=0.9)
    assert fake.paths  # the request did reach the server and hang there
    assert "reading group 'mail'" in str(error)
    assert "failed: ;" not in str(error)  # a TimeoutError says nothing; its name must show


async def test_slow_lanes_share_one_deadline(fake: FakeManagement):
    async def slow(name: str) -> web.StreamResponse:
        await asyncio.sleep(0.3)
        return web.json_response(queue_body(1))

    fake.reply = slow
    started = time.monotonic()
    async with SignalReader(fake.settings(), timeout=0.5) as reader:
        with pytest.raises(SignalsUnavailable, match=r"took over 0\.5s"):
            await reader.read(PAY)  # four lanes at 0.3 s each
    assert time.monotonic() - started < 0.9
    assert len(fake.paths) == 2


async def test_an_http_error_is_unavailable_with_its_status(fake: FakeManagement):
    async def failing(name: str) -> web.StreamResponse:
        return web.Response(status=500, text="internal error")

    fake.reply = failing
    async with SignalReader(fake.settings(), timeout=0.5) as reader:
        error = await expect_unavailable(reader, within=0.5)
    assert error.status == 500
    assert "HTTP 500" in str(error)


async def test_a_missing_queue_is_unavailable_with_404(fake: FakeManagement):
    async with SignalReader(fake.settings(), timeout=0.5) as reader:
        error = await expect_unavailable(reader, within=0.5)
    assert error.status == 404


@pytest.mark.parametrize("body", [b"<html>oops</html>", b'{"messages_ready": 1', b""])
async def test_garbage_is_unavailable(fake: FakeManagement, body: bytes):
    async def garbage(name: str) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    fake.reply = garbage
    async with SignalReader(fake.settings(), timeout=0.5) as reader:
        await expect_unavailable(reader, within=0.5)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ([queue_body(1)], "expected a JSON object"),
        ("5", "expected a JSON object"),
        ({}, "no messages_ready yet"),  # declared, but not yet in a statistics round
        (queue_body("5"), "messages_ready is not a count: '5'"),
        (queue_body(5.0), "messages_ready is not a count: 5.0"),
        (queue_body(True), "messages_ready is not a count: True"),
        (queue_body(-1), "messages_ready is not a count: -1"),
        (queue_body(1, None), "messages_unacknowledged is not a count: None"),
        ({"messages_ready": 1, "messages_unacknowledged": 0}, "consumers is not a count: None"),
        (queue_body(1, message_stats=[1]), "message_stats is not an object"),
        (queue_body(1, message_stats={"publish_details": 3}), "publish_details.rate"),
        (queue_body(1, message_stats={"publish_details": {}}), "publish_details.rate"),
        (queue_body(1, message_stats={"ack_details": {"rate": "1"}}), "ack_details.rate"),
        (queue_body(1, message_stats={"ack_details": {"rate": -2}}), "ack_details.rate"),
        (queue_body(1, message_stats={"ack_details": {"rate": math.nan}}), "ack_details.rate"),
        (
            queue_body(1, message_stats={"deliver_get_details": {"rate": math.inf}}),
            "deliver_get_details.rate",
        ),
        (queue_body(1, head_message_timestamp="yesterday"), "head_message_timestamp"),
        (queue_body(1, head_message_timestamp=False), "head_message_timestamp"),
    ],
)
async def test_a_body_of_the_wrong_shape_is_unavailable_naming_the_field(
    fake: FakeManagement, body, named: str
):
    fake.bodies[MAIL.queue_names[0]] = body
    async with SignalReader(fake.settings(), timeout=0.5) as reader:
        error = await expect_unavailable(reader, within=0.5)
    assert named in str(error)
    assert "group 'mail'" in str(error)
    assert MAIL.queue_names[0] in str(error)


async def test_one_bad_lane_makes_the_whole_reading_unavailable(fake: FakeManagement):
    fake.bodies = {name: queue_body(1) for name in PAY.queue_names}
    fake.bodies[LOW] = queue_body("lots")
    async with SignalReader(fake.settings(), timeout=0.5) as reader:
        with pytest.raises(SignalsUnavailable, match=LOW):
            await reader.read(PAY)
