"""A seeded hostile stream and stalled connections against the real stack, then a consistency check.

No request gets a 5xx; stalled heads and bodies are cut off with 408; the server logs no
traceback and no error; and ``taskctl doctor`` finds a message on the broker for every job
the store holds as queued.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
import pytest

from tests.fuzz.conftest import Served
from tests.fuzz.hostile import stream
from topology import limits

pytestmark = pytest.mark.rabbitmq


async def _send_all(served: Served, seed: int, count: int) -> dict[int, int]:
    statuses: dict[int, int] = {}
    limits_ = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(base_url=served.base, timeout=30, limits=limits_) as client:
        gate = asyncio.Semaphore(8)

        async def one(request: object) -> None:
            async with gate:
                sent = await client.request(
                    request.method,  # type: ignore[attr-defined]
                    request.path,  # type: ignore[attr-defined]
                    headers=request.headers,  # type: ignore[attr-defined]
                    content=request.body,  # type: ignore[attr-defined]
                )
                statuses[sent.status_code] = statuses.get(sent.status_code, 0) + 1
                assert sent.status_code < 500, (request, sent.text[:300])
                assert len(sent.content) < 8192 or sent.status_code < 300, "an error echoes input"

        await asyncio.gather(*(one(r) for r in stream(seed, count, served.key)))
    return statuses


async def _stalled(served: Served, head: bytes) -> bytes:
    host, port = served.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout=limits.BODY_IDLE_TIMEOUT_S + 10)
    finally:
        writer.close()


def test_hostile_requests_get_4xx_and_stalled_connections_are_cut(served: Served) -> None:
    auth = f"Authorization: Bearer {served.key}\r\n".encode()
    post = b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth

    async def go() -> tuple[dict[int, int], list[bytes]]:
        stalled = asyncio.gather(
            _stalled(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"),  # the head never ends
            _stalled(served, post + b"Content-Length: 100\r\n\r\n{"),  # short body
            _stalled(served, post + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n"),  # stopped
        )
        statuses = await _send_all(served, seed=14, count=300)
        return statuses, list(await stalled)

    statuses, cut = asyncio.run(go())
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in cut), cut
    assert {202, 207, 422} <= statuses.keys(), statuses


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


def test_after_the_fuzz_run_nothing_was_logged_and_store_and_broker_agree(served: Served) -> None:
    # HOSTILE_REQUESTS=10000 makes this the long run of docs/reliability.md.
    count = int(os.environ.get("HOSTILE_REQUESTS", "100"))
    asyncio.run(_send_all(served, seed=15, count=min(count, 300)))  # warm: caches, pools
    start = _rss_kib(served.pid)
    asyncio.run(_send_all(served, seed=16, count=count))
    end = _rss_kib(served.pid)
    print(f"API RSS {start} KiB after warm-up, {end} KiB after {count} hostile requests")
    assert end <= start * 1.2
    assert served.problems_logged() == []
    done = served.taskctl("doctor", "--json", check=False)
    assert json.loads(done.stdout) == {"ok": True, "problems": []}, done.stdout + done.stderr
    assert done.returncode == 0
