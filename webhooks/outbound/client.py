"""An SSRF-safe HTTP POST: resolve once, check every address, dial the pinned one, never redirect."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from ssl import SSLContext

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from topology.errors import DeliveryFailed, DeliveryRejected
from webhooks.outbound.addresses import (
    DNS_TIMEOUT_S,
    AllowList,
    IPAddress,
    check_callback_url,
    display,
    host_key,
    parse_callback_url,
)

BODY_LIMIT = 64 * 1024
"""Bytes of a response body read at most; the rest is never pulled off the socket."""
KEPT_HEADERS = ("content-type", "content-length", "date", "location", "retry-after")
"""Response headers worth keeping for a delivery log (lower case)."""
_HEADER_LIMIT = 512
# 408 Request Timeout, 425 Too Early and 429 Too Many Requests say "later", not "never".
_RETRYABLE_4XX = frozenset({408, 425, 429})


def open_session(allow: AllowList, *, ssl: SSLContext | bool = True) -> aiohttp.ClientSession:
    """Return a session for repeated ``post`` calls under ``allow`` (use it as ``async with``)."""
    return aiohttp.ClientSession(
        connector=PinnedConnector(allow, ssl=ssl),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        auto_decompress=False,
        headers={"Accept-Encoding": "identity"},
    )


async def post(
    url: str | URL,
    body: bytes,
    headers: Mapping[str, str],
    *,
    session: aiohttp.ClientSession,
    # A delivery's time budget is part of its policy (it also bounds DNS and the body read),
    # so it is a parameter rather than left to the caller's asyncio.timeout.
    timeout: float,  # noqa: ASYNC109
    dns_timeout: float = DNS_TIMEOUT_S,
) -> Response:
    """POST ``body`` to ``url`` under the allow-list of ``session`` (from ``open_session``); return the 2xx answer."""
    connector = session.connector
    if not isinstance(connector, PinnedConnector):  # refused before any DNS query
        raise TypeError("post() needs a session from webhooks.outbound.open_session()")
    shown = display(parse_callback_url(url))
    try:
        async with asyncio.timeout(timeout):
            target = await check_callback_url(url, connector.allow, dns_timeout=dns_timeout)
            with connector.pins.pinned(target.host, target.pinned):
                async with session.post(
                    target.url,
                    data=body,
                    headers=dict(headers),
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as reply:
                    content = await _read_capped(reply)
                    response = Response(reply.status, kept_headers(reply.headers), content)
    except aiohttp.ClientError as exc:
        raise DeliveryFailed(f"{shown} failed: {type(exc).__name__}: {exc}") from exc
    except TimeoutError as exc:
        raise DeliveryFailed(f"{shown} did not answer within {timeout}s") from exc
    status = response.status
    if 200 <= status < 300:
        return response
    hint = retry_after(response.headers.get("retry-after"))
    if 300 <= status < 400:
        where = response.headers.get("location", "nowhere")
        raise DeliveryFailed(
            f"{shown} answered {status} redirecting to {where!r}; redirects are not followed",
            status=status,
            retry_after=hint,
        )
    snippet = response.body[:120]
    if 400 <= status < 500 and status not in _RETRYABLE_4XX:
        raise DeliveryRejected(f"{shown} rejected the call: {status} {snippet!r}", status=status)
    raise DeliveryFailed(
        f"{shown} answered {status} {snippet!r}; retry later", status=status, retry_after=hint
    )


async def _read_capped(reply: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < BODY_LIMIT:
        chunk = await reply.content.read(BODY_LIMIT - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if not reply.content.at_eof():
        # Drop the connection instead of draining an unbounded body to reuse it.
        reply.close()
    return b"".join(chunks)


@dataclass(frozen=True)
class Response:
    """A receiver's answer: its status, a few headers and the first ``BODY_LIMIT`` bytes."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return the ``KEPT_HEADERS`` present in ``headers``, lower-cased and length-capped."""
    lowered = {name.lower(): value for name, value in headers.items()}
    return {name: lowered[name][:_HEADER_LIMIT] for name in KEPT_HEADERS if name in lowered}


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Return a ``Retry-After`` value (seconds or an HTTP date) as seconds from ``now``, or None."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; an obsolete form may lack the zone
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


class PinnedResolver(AbstractResolver):
    """Resolve a host name to the one address pinned for it, and refuse every other name."""

    def __init__(self) -> None:
        self._pins: dict[str, tuple[IPAddress, int]] = {}

    @contextmanager
    def pinned(self, host: str, address: IPAddress) -> Iterator[None]:
        """Answer ``address`` for ``host`` while the block runs."""
        key = host_key(host)
        _, users = self._pins.get(key, (address, 0))
        # Concurrent calls to one name may pin different checked addresses; the latest
        # wins, which is safe because every pin passed the connector's one allow-list.
        self._pins[key] = (address, users + 1)
        try:
            yield
        finally:
            current, users = self._pins[key]
            if users == 1:
                del self._pins[key]
            else:
                self._pins[key] = (current, users - 1)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Return the pinned address of ``host``; raise OSError for a name nobody pinned."""
        pin = self._pins.get(host_key(host))
        if pin is None:
            raise OSError(f"{host} was not checked and pinned; refusing to resolve it")
        address = pin[0]
        return [
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
        ]

    async def close(self) -> None:
        """Forget every pin."""
        self._pins.clear()


class PinnedConnector(aiohttp.TCPConnector):
    """A TCP connector that dials only pinned addresses, bound to one allow-list."""

    def __init__(self, allow: AllowList, *, ssl: SSLContext | bool = True) -> None:
        self.allow = allow
        self.pins = PinnedResolver()
        # No DNS cache: the resolver is a dictionary look-up, and a cached answer would
        # outlive the pin it came from.
        super().__init__(resolver=self.pins, use_dns_cache=False, ssl=ssl)
