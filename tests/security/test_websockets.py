"""The WebSocket doors on a real uvicorn server: credentials, Origin, frame size, idle, no leaks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from producers.auth.principal import Scope
from tests.helpers import eventually
from tests.security.conftest import Door, Opener, serving
from topology.settings import ApiSettings

pytestmark = pytest.mark.rabbitmq

CONSOLE = "https://console.example.com"
SETTINGS = ApiSettings(ws_idle_timeout=1.0, ws_max_frame_bytes=1024, ws_origins=CONSOLE)


@dataclass
class Live:
    door: Door
    base: str
    token: str

    @property
    def watchers(self) -> int:
        return self.door.services.hub.watchers


@pytest.fixture
async def live(open_door: Opener) -> AsyncIterator[Live]:
    async with open_door(settings=SETTINGS) as door, serving(door, SETTINGS) as base:
        yield Live(door, base, await door.key())


async def refused_with(url: str, status: int, **options: object) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, **options):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == status
    assert refused.value.response.headers["Content-Type"] == "application/problem+json"


async def test_no_credential_no_stream(live: Live) -> None:
    await refused_with(f"{live.base}/ws/jobs", 401)
    await refused_with(f"{live.base}/ws/jobs?access_token={live.token}", 401)
    await refused_with(f"{live.base}/ws/jobs", 401, subprotocols=["bearer", "tq_nope"])
    reader = await live.door.key(scopes=(Scope.JOBS_WRITE,))
    await refused_with(f"{live.base}/ws/jobs", 403, subprotocols=["bearer", reader])
    assert live.watchers == 0


async def test_a_key_in_the_subprotocol_or_the_header_opens_the_stream(live: Live) -> None:
    async with live.door.client(live.token) as http:
        job = (await http.post("/jobs", json={"type": "email", "delay": 600})).json()
    url = f"{live.base}/ws/jobs/{job['id']}"
    async with connect(url, subprotocols=["bearer", live.token]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "bearer"  # the key itself is never echoed
        assert (await ws.recv(decode=True))[:7] == '{"id":"'
    async with connect(url, additional_headers={"Authorization": f"Bearer {live.token}"}) as ws:
        assert job["id"] in await ws.recv(decode=True)


async def test_only_listed_or_same_origin_pages_may_connect(live: Live) -> None:
    auth = {"Authorization": f"Bearer {live.token}"}
    url = f"{live.base}/ws/jobs"
    await refused_with(url, 403, additional_headers=auth, origin="https://evil.example.com")
    async with connect(url, additional_headers=auth, origin=CONSOLE) as ws:  # type: ignore[arg-type]
        assert ws.protocol.state.name == "OPEN"
    same = "http://" + live.base.removeprefix("ws://")
    async with connect(url, additional_headers=auth, origin=same) as ws:  # type: ignore[arg-type]
        assert ws.protocol.state.name == "OPEN"


async def test_a_frame_over_the_limit_closes_the_stream(live: Live) -> None:
    auth = {"Authorization": f"Bearer {live.token}"}
    async with connect(f"{live.base}/ws/jobs", additional_headers=auth) as ws:
        await ws.send("x" * 2048)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009
    await eventually(lambda: _zero(live), within=5)


async def test_an_idle_stream_is_closed(live: Live) -> None:
    auth = {"Authorization": f"Bearer {live.token}"}
    async with connect(f"{live.base}/ws/jobs", additional_headers=auth) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()  # nothing happens for the idle timeout (1 s)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4408
    await eventually(lambda: _zero(live), within=5)


async def test_a_thousand_connections_leave_no_watcher_behind(live: Live) -> None:
    async with live.door.client(live.token) as http:
        job = (await http.post("/jobs", json={"type": "email", "delay": 600})).json()
    start = live.watchers
    auth = {"Authorization": f"Bearer {live.token}"}
    for n in range(1000):
        # Half follow a job, half a type; none reads anything before leaving.
        path = f"/ws/jobs/{job['id']}" if n % 2 else "/ws/jobs?type=email"
        async with connect(f"{live.base}{path}", additional_headers=auth):
            pass

    async def settled() -> bool:
        return live.watchers == start

    await eventually(settled, within=10)
    assert start == 0


async def test_another_tenants_job_cannot_be_watched(live: Live) -> None:
    async with live.door.client(await live.door.key(tenant="acme")) as acme:
        theirs = (await acme.post("/jobs", json={"type": "email", "delay": 600})).json()
        mine = (await acme.post("/jobs", json={"type": "email", "delay": 600})).json()
    globex = await live.door.key(tenant="globex")
    auth = {"Authorization": f"Bearer {globex}"}
    async with connect(f"{live.base}/ws/jobs/{theirs['id']}", additional_headers=auth) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4404
    async with connect(f"{live.base}/ws/jobs", additional_headers=auth) as ws:
        async with live.door.client(await live.door.key(tenant="acme")) as acme:
            assert (await acme.delete(f"/jobs/{mine['id']}")).status_code == 200
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()  # acme's cancel never reaches globex: the stream idles out
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4408


async def _zero(live: Live) -> bool:
    return live.watchers == 0
