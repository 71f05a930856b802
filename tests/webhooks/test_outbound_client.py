from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from ipaddress import ip_address
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.webhooks.conftest import Receiver, StubDns
from tests.webhooks.test_outbound_url_check import PROBES
from topology.errors import AddressRefused, DeliveryFailed, DeliveryRejected
from webhooks.outbound.addresses import AllowList
from webhooks.outbound.client import BODY_LIMIT, PinnedResolver, Response, open_session, post

LOOPBACK = AllowList.parse("127.0.0.1")
BODY = b'{"job":"j-1","state":"done"}\x00\xff'
HEADERS = {
    "Content-Type": "application/json",
    "webhook-id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
    "webhook-timestamp": "1674087231",
    "webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
}


async def send(url: str, allow: AllowList = LOOPBACK, timeout: float = 5) -> Response:  # noqa: ASYNC109
    """POST the test body once, on a session of its own under ``allow``."""
    async with open_session(allow) as session:
        return await post(url, BODY, HEADERS, session=session, timeout=timeout)


def reply_with(status: int, headers: dict[str, str] | None = None, body: bytes = b""):
    async def reply(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers=headers, body=body)

    return reply


async def test_an_allow_listed_receiver_gets_the_exact_body_and_headers(
    receiver: Receiver, dials: list[tuple[Any, ...]]
):
    response = await send(f"{receiver.url}/hooks/job?tenant=t1")

    assert response.status == 200
    assert response.body == b"ok"
    assert response.headers["content-type"].startswith("text/plain")
    assert "x-internal" not in response.headers  # only the kept subset comes back
    [seen] = receiver.seen
    assert (seen.method, seen.path_qs, seen.body) == ("POST", "/hooks/job?tenant=t1", BODY)
    for name, value in HEADERS.items():
        assert seen.headers.getall(name) == [value]
    assert seen.headers["Content-Length"] == str(len(BODY))
    assert "Cookie" not in seen.headers
    assert dials == [("127.0.0.1", receiver.port)]


async def test_the_same_receiver_without_the_allow_list_hears_nothing(
    receiver: Receiver, dials: list[tuple[Any, ...]]
):
    with pytest.raises(AddressRefused, match="loopback"):
        await send(f"{receiver.url}/hook", AllowList())
    assert receiver.seen == []
    assert dials == []


@pytest.mark.parametrize(("probe", "reason"), PROBES)
async def test_ssrf_probes_are_refused_before_any_connection(
    receiver: Receiver, dials: list[tuple[Any, ...]], probe: str, reason: str
):
    with pytest.raises(AddressRefused) as caught:
        await send(probe.format(port=receiver.port), AllowList())
    assert reason in caught.value.reason
    assert receiver.seen == []
    assert dials == []


async def test_a_redirect_inward_is_reported_not_followed(
    receiver: Receiver, dials: list[tuple[Any, ...]]
):
    receiver.reply = reply_with(302, {"Location": "http://169.254.169.254/latest/meta-data"})
    with pytest.raises(DeliveryFailed, match="redirects are not followed") as caught:
        await send(f"{receiver.url}/hook")
    assert caught.value.status == 302
    assert "169.254.169.254" in str(caught.value)
    assert len(receiver.seen) == 1
    assert dials == [("127.0.0.1", receiver.port)]


async def test_a_redirect_to_the_same_receiver_is_not_followed_either(receiver: Receiver):
    receiver.reply = reply_with(307, {"Location": "/elsewhere"})
    with pytest.raises(DeliveryFailed) as caught:
        await send(f"{receiver.url}/hook")
    assert caught.value.status == 307
    assert [s.path_qs for s in receiver.seen] == ["/hook"]


async def test_dns_rebinding_still_dials_the_checked_address(
    receiver: Receiver, dials: list[tuple[Any, ...]], dns: StubDns
):
    # Checked once at 127.0.0.1 (allow-listed); every later lookup would say the metadata
    # address. The one lookup is the only one, and the connection goes where it said.
    dns.answer("rebind.test", ["127.0.0.1"], ["169.254.169.254"])
    url = f"http://rebind.test:{receiver.port}/hook"
    response = await send(url)
    assert response.status == 200
    assert [host for host, _ in dns.asked] == ["rebind.test"]
    assert dials == [("127.0.0.1", receiver.port)]
    assert receiver.seen[0].headers["Host"] == f"rebind.test:{receiver.port}"


async def test_a_name_rebound_inward_before_the_check_is_refused(
    receiver: Receiver, dials: list[tuple[Any, ...]], dns: StubDns
):
    dns.answer("rebind.test", ["127.0.0.1"])
    with pytest.raises(AddressRefused, match=r"rebind\.test resolves to 127\.0\.0\.1"):
        await send(f"http://rebind.test:{receiver.port}/", AllowList())
    assert receiver.seen == []
    assert dials == []


async def test_every_address_is_checked_not_only_the_first(
    receiver: Receiver, dials: list[tuple[Any, ...]], dns: StubDns
):
    dns.answer("two.test", ["127.0.0.1", "169.254.169.254"])
    with pytest.raises(AddressRefused, match="cloud metadata"):
        await send(f"http://two.test:{receiver.port}/")
    assert receiver.seen == []
    assert dials == []


async def test_a_host_name_on_the_allow_list_is_dialled_at_its_address(
    receiver: Receiver, dns: StubDns
):
    dns.answer("hooks.internal", ["127.0.0.1"])
    allow = AllowList.parse("hooks.internal")
    await send(f"http://hooks.internal:{receiver.port}/", allow)
    assert receiver.seen[0].headers["Host"] == f"hooks.internal:{receiver.port}"


async def test_the_pinned_resolver_answers_only_the_checked_address():
    resolver = PinnedResolver()
    with pytest.raises(OSError, match="not checked and pinned"):
        await resolver.resolve("rebind.test", 80)
    with resolver.pinned("Rebind.Test.", ip_address("127.0.0.1")):
        with resolver.pinned("rebind.test", ip_address("::1")):
            [answer] = await resolver.resolve("rebind.test", 8080, socket.AF_INET)
            assert (answer["host"], answer["port"], answer["family"]) == (
                "::1",
                8080,
                socket.AF_INET6,
            )
        [answer] = await resolver.resolve("REBIND.test.", 80)
        assert answer["host"] == "::1"  # the latest pin stays until its last user leaves
        with pytest.raises(OSError, match=r"other\.test was not checked"):
            await resolver.resolve("other.test", 80)
    with pytest.raises(OSError, match="not checked and pinned"):
        await resolver.resolve("rebind.test", 80)


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (503, {"Retry-After": "7"}, 7.0),
        (500, {}, None),
        (502, {"Retry-After": "soon"}, None),
        (429, {"Retry-After": "120"}, 120.0),
        (408, {}, None),
    ],
)
async def test_retryable_statuses_fail_with_status_and_hint(
    receiver: Receiver, status: int, headers: dict[str, str], retry_after: float | None
):
    receiver.reply = reply_with(status, headers, b"busy")
    with pytest.raises(DeliveryFailed) as caught:
        await send(f"{receiver.url}/")
    assert (caught.value.status, caught.value.retry_after) == (status, retry_after)


async def test_retry_after_as_an_http_date(receiver: Receiver):
    when = datetime.now(UTC) + timedelta(seconds=90)
    receiver.reply = reply_with(429, {"Retry-After": format_datetime(when, usegmt=True)})
    with pytest.raises(DeliveryFailed) as caught:
        await send(f"{receiver.url}/")
    assert caught.value.retry_after is not None
    assert 80 <= caught.value.retry_after <= 91


@pytest.mark.parametrize("status", [400, 401, 404, 410, 413])
async def test_a_final_4xx_is_rejected_for_good(receiver: Receiver, status: int):
    receiver.reply = reply_with(status, body=b"no such endpoint")
    with pytest.raises(DeliveryRejected, match="no such endpoint") as caught:
        await send(f"{receiver.url}/")
    assert caught.value.status == status


async def test_a_silent_receiver_times_out(receiver: Receiver):
    async def never(request: web.Request) -> web.StreamResponse:
        await receiver.release.wait()
        return web.Response()

    receiver.reply = never
    started = time.monotonic()
    with pytest.raises(DeliveryFailed, match=r"did not answer within 0\.3s") as caught:
        await send(f"{receiver.url}/", timeout=0.3)
    assert time.monotonic() - started < 2
    assert caught.value.status is None


async def test_a_body_that_stalls_times_out(receiver: Receiver):
    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"partial")
        await receiver.release.wait()
        return response

    receiver.reply = stall
    with pytest.raises(DeliveryFailed, match="did not answer"):
        await send(f"{receiver.url}/", timeout=0.3)


async def test_a_slow_dns_answer_counts_against_the_timeout(dns: StubDns, monkeypatch):
    loop = asyncio.get_running_loop()

    async def slow(*args: Any, **kwargs: Any) -> list[Any]:
        await asyncio.sleep(10)
        return []

    monkeypatch.setattr(loop, "getaddrinfo", slow)
    with pytest.raises(DeliveryFailed, match="did not answer"):
        await send("http://slow.test/", timeout=0.2)


async def test_the_response_body_is_read_only_up_to_the_cap(receiver: Receiver):
    receiver.reply = reply_with(200, body=b"x" * (BODY_LIMIT * 16))
    response = await send(f"{receiver.url}/")
    assert response.body == b"x" * BODY_LIMIT


async def test_a_closed_port_is_a_retryable_failure():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: the dial is refused
        with pytest.raises(DeliveryFailed, match="failed") as caught:
            await send(f"http://127.0.0.1:{port}/")
    assert caught.value.status is None


async def test_a_shared_session_keeps_no_cookies_between_calls(receiver: Receiver):
    receiver.reply = reply_with(200, {"Set-Cookie": "session=tenant-a; Path=/"})
    async with open_session(LOOPBACK) as session:
        for _ in range(2):
            await post(f"{receiver.url}/", BODY, HEADERS, session=session, timeout=5)
    assert [s.headers.get("Cookie") for s in receiver.seen] == [None, None]


async def test_a_session_must_come_from_open_session(receiver: Receiver):
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(TypeError, match="open_session"):
            await post(f"{receiver.url}/", BODY, HEADERS, session=plain, timeout=5)
    assert receiver.seen == []
