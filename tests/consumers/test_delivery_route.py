"""``FrameTap`` with ``DeliveryRoute``s: routed deliveries cut out of the byte stream whole, every other frame passed on."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pamqp.frame
import pytest
import uvloop
from aiormq.connection import SSLCerts, SSLContextProvider
from pamqp import commands, header
from pamqp.body import ContentBody
from pamqp.heartbeat import Heartbeat
from yarl import URL

from consumers.delivery_route import DeliveryRoute, Properties, route_deliveries
from producers.frame_tap import FrameTap, Route, _Tap
from tests.consumers.autoscaler.certs import make_certs

CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"


@dataclass(eq=False)
class Channel:
    """Stands for an aiormq channel: the tap only reads its number."""

    number: int


@dataclass
class Inner(asyncio.Protocol):
    """aiormq's side: the bytes that reach it."""

    data: bytearray = field(default_factory=bytearray)

    def data_received(self, data: bytes) -> None:
        self.data += data

    def frames(self) -> list[tuple[int, Any]]:
        """Return (channel, frame) for every frame that reached aiormq."""
        found, rest = [], bytes(self.data)
        while rest:
            used, channel, frame = pamqp.frame.unmarshal(rest)
            found.append((channel, frame))
            rest = rest[used:]
        return found


def deliver(
    channel: int, tag: int, body: bytes, consumer: str = "ours", max_body: int = 0
) -> bytes:
    """Return the frames of one delivery as the broker sends them (the body split at ``max_body``)."""
    props = commands.Basic.Properties(headers={"traceparent": "00-abc-def-01"}, delivery_mode=2)
    parts = [
        commands.Basic.Deliver(consumer, tag, False, "taskq.jobs", "email"),
        header.ContentHeader(body_size=len(body), properties=props),
    ]
    step = max_body or len(body) or 1
    parts += [ContentBody(body[i : i + step]) for i in range(0, len(body), step)]
    return b"".join(pamqp.frame.marshal(part, channel) for part in parts)


def tapped(
    *consumers: tuple[int, str],
) -> tuple[_Tap, Inner, list[tuple[int, int, Properties, bytes]]]:
    """Return a tap routing ``consumers`` (channel, consumer tag), aiormq's side, and what it took."""
    taken: list[tuple[int, int, Properties, bytes]] = []
    routes: dict[int, Route] = {}
    for number, tag in consumers:
        route = routes.setdefault(number, DeliveryRoute(Channel(number)))  # type: ignore[arg-type]
        assert isinstance(route, DeliveryRoute)
        route.sinks[tag.encode()] = lambda c, t, p, b: taken.append((c.number, t, p, b))
    inner = Inner()
    return _Tap(inner, routes), inner, taken


async def test_every_split_of_the_stream_gives_the_same_deliveries_and_passes_the_rest() -> None:
    other = pamqp.frame.marshal(commands.Basic.Ack(7), 1)
    stream = (
        deliver(1, 1, b'{"a":1}')
        + other
        + deliver(1, 2, b"x" * 300, max_body=128)  # a body in three frames
        + deliver(1, 3, b"")  # no body frame at all
        + deliver(1, 4, b"theirs", consumer="not ours")
        + deliver(2, 5, b"other channel")
    )
    for cut in range(1, len(stream)):
        tap, inner, taken = tapped((1, "ours"))
        tap.data_received(stream[:cut])
        tap.data_received(stream[cut:])
        assert [(c, t, b) for c, t, _, b in taken] == [
            (1, 1, b'{"a":1}'),
            (1, 2, b"x" * 300),
            (1, 3, b""),
        ]
        passed = inner.frames()
        assert [(c, type(f).__name__) for c, f in passed] == [
            (1, "Ack"),
            (1, "Deliver"),
            (1, "ContentHeader"),
            (1, "ContentBody"),
            (2, "Deliver"),
            (2, "ContentHeader"),
            (2, "ContentBody"),
        ]


async def test_headers_are_decoded_on_demand() -> None:
    tap, _, taken = tapped((1, "ours"))
    tap.data_received(deliver(1, 9, b"{}"))
    ((_, _, properties, _),) = taken
    assert properties.headers == {"traceparent": "00-abc-def-01"}


async def test_aiormq_hears_a_heartbeat_while_the_tap_takes_every_frame() -> None:
    tap, inner, taken = tapped((1, "ours"))
    tap.data_received(deliver(1, 1, b"{}"))
    assert inner.data == b""
    tap._heard -= 2  # as if aiormq had heard nothing for two seconds
    tap.data_received(deliver(1, 2, b"{}"))
    assert [type(f) for _, f in inner.frames()] == [Heartbeat]
    assert len(taken) == 2


async def test_bytes_that_are_not_frames_go_to_aiormq_as_they_are() -> None:
    tap, inner, taken = tapped((1, "ours"))
    refused = b"AMQP\x00\x00\x09\x01"  # the broker's answer to a protocol header it refuses
    tap.data_received(refused)
    tap.data_received(deliver(1, 1, b"{}"))
    assert bytes(inner.data) == refused + deliver(1, 1, b"{}")
    assert taken == []


async def test_a_channel_opened_again_under_its_number_gets_a_route_of_its_own() -> None:
    tap = FrameTap()
    route_deliveries(tap, Channel(1), "ours", lambda *_: None)  # type: ignore[arg-type]
    first = tap._routes[1]
    assert isinstance(first, DeliveryRoute)
    assert first.sinks.keys() == {b"ours"}
    replaced = Channel(1)  # the same number on a channel opened again
    route_deliveries(tap, replaced, "again", lambda *_: None)  # type: ignore[arg-type]
    again = tap._routes[1]
    assert isinstance(again, DeliveryRoute)
    assert again.channel is replaced
    assert again.sinks.keys() == {b"again"}


async def _over_tls(tmp_path: Path) -> tuple[list[bytes], bytes]:
    """Serve a delivery and an ack over TLS to a tapped transport; return what each side got."""
    certs = make_certs()
    (tmp_path / "server.pem").write_bytes(certs.server.cert + certs.server.key)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(tmp_path / "server.pem")
    ack = pamqp.frame.marshal(commands.Basic.Ack(7), 1)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1)  # as a broker, it speaks once the client has
        writer.write(deliver(1, 1, b"over tls") + ack)
        await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_side)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    provider = SSLContextProvider(
        ssl_context=ssl.create_default_context(cadata=certs.ca.decode()),
        ssl_certs=SSLCerts(None, None, None, None, None, verify=True),
        loop=loop,
    )
    tap, taken = FrameTap(), []
    async with server:
        reader, writer = await tap.create(
            URL(f"amqps://127.0.0.1:{port}/"), ssl_context_provider=provider
        )
        route_deliveries(tap, Channel(1), "ours", lambda c, t, p, b: taken.append(b))  # type: ignore[arg-type]
        writer.write(b"!")
        passed = await reader.readexactly(len(ack))
        writer.close()
    return taken, passed == ack


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_a_tls_transport_is_tapped_too(run: Any, tmp_path: Path) -> None:
    assert run(_over_tls(tmp_path)) == ([b"over tls"], True)


def test_written_for_the_pinned_aiormq_and_pamqp() -> None:
    """The tap reads frames below aiormq: a new aiormq or pamqp needs this module read again."""
    pins = dict(
        line.strip().split("==", 1)
        for line in CONSTRAINTS.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert (
        (version("aiormq"), version("pamqp"))
        == (pins["aiormq"], pins["pamqp"])
        == (
            "7.2.4",
            "4.0.1",
        )
    )
