"""Check a callback URL: its shape at registration, then its host's addresses, resolved once."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from yarl import URL

from topology.errors import AddressRefused, DeliveryFailed
from webhooks.outbound.addresses import (
    AllowList,
    IPAddress,
    host_key,
    is_host_name,
    is_numeric_host,
    parse_address,
    refusal,
)

SCHEMES = frozenset({"http", "https"})
DNS_TIMEOUT_S = 5.0  # a resolver that never answers must not hold a request or a delivery


@dataclass(frozen=True)
class Target:
    """A callback URL whose host resolved, once, to addresses that may all be dialled."""

    url: URL
    host: str
    port: int
    addresses: tuple[IPAddress, ...]

    @property
    def pinned(self) -> IPAddress:
        """Return the address the connection is pinned to (the resolver's first answer)."""
        return self.addresses[0]


def display(url: URL) -> str:
    """Return ``url`` without userinfo, query or fragment, which may carry secrets, for messages."""
    if not url.absolute:
        return str(url.with_query(None).with_fragment(None))[:200]
    return str(url.with_user(None).with_query(None).with_fragment(None))[:200]


def parse_callback_url(text: str | URL) -> URL:
    """Return ``text`` as a URL an outbound call may use, judging its shape only (no DNS)."""
    try:
        url = text if isinstance(text, URL) else URL(text)
        port = url.port
    except (TypeError, ValueError) as exc:
        raise AddressRefused(str(text)[:200], f"not a URL: {exc}") from exc
    shown = display(url)
    if url.scheme not in SCHEMES:
        raise AddressRefused(shown, f"scheme {url.scheme or 'none'}:// is not http or https")
    if not url.raw_host:
        raise AddressRefused(shown, "the URL names no host")
    if not port:
        raise AddressRefused(shown, "port 0 cannot be dialled")
    if url.raw_user is not None or url.raw_password is not None:
        raise AddressRefused(shown, "userinfo (user:password@) is not allowed in callback URLs")
    host = url.raw_host
    literal = parse_address(url.host or "") is not None
    if not (literal or is_host_name(host) or is_numeric_host(host)):
        raise AddressRefused(shown, f"{host!r} is neither an IP address nor a host name")
    return url


async def check_callback_url(
    text: str | URL, allow: AllowList, *, dns_timeout: float = DNS_TIMEOUT_S
) -> Target:
    """Return the URL's target after resolving its host once and checking every address."""
    url = parse_callback_url(text)
    host, port = url.raw_host or "", url.port or 0  # both set: parse_callback_url checked
    shown = display(url)
    if _is_localhost_name(host) and not allow.admits_host(host):
        # RFC 6761: these always mean this machine, whether or not DNS answers for them.
        raise AddressRefused(shown, f"{host} names the local host (loopback)")
    addresses = await _resolve(host, port, shown, dns_timeout)
    for address in addresses:
        why = refusal(address, allow, host=host)
        if why is not None:
            raise AddressRefused(shown, f"{host} resolves to {address}, which is {why}")
    if is_numeric_host(host):
        # aiohttp refuses to dial these forms, and a reader should see the real address.
        raise AddressRefused(shown, f"{host} is a legacy form of {addresses[0]}; write that")
    return Target(url=url, host=host, port=port, addresses=addresses)


def _is_localhost_name(host: str) -> bool:
    name = host_key(host)
    return name == "localhost" or name.endswith(".localhost")


async def _resolve(host: str, port: int, shown: str, limit: float) -> tuple[IPAddress, ...]:
    # yarl keeps an IPv6 zone percent-encoded in raw_host ("fe80::1%25eth0").
    literal = parse_address(host.replace("%25", "%"))
    if literal is not None:
        return (literal,)
    numeric = is_numeric_host(host)
    # Everything that is not a canonical literal goes through getaddrinfo, so numeric
    # disguises such as 2130706433, 0x7f000001 or 127.1 come back as the address they mean
    # (AI_NUMERICHOST: they never reach DNS).
    flags = socket.AI_NUMERICHOST if numeric else socket.AI_ADDRCONFIG
    try:
        # The lookup runs in a thread that cannot be stopped; the wait for it can.
        async with asyncio.timeout(limit):
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=flags
            )
    except TimeoutError as exc:
        raise DeliveryFailed(f"DNS did not resolve {host} within {limit}s, for {shown}") from exc
    except (OSError, UnicodeError) as exc:
        if numeric:
            raise AddressRefused(shown, f"{host} is not a valid IPv4 address") from exc
        raise DeliveryFailed(f"cannot resolve {host} for {shown}: {exc}") from exc
    addresses: dict[IPAddress, None] = {}
    for family, *_, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = parse_address(str(sockaddr[0]))
            if address is None:
                raise AddressRefused(shown, f"{host} resolves to unparseable {sockaddr[0]!r}")
            addresses.setdefault(address)
    if not addresses:
        raise DeliveryFailed(f"{host} has no IPv4 or IPv6 address, for {shown}")
    return tuple(addresses)
