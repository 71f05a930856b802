"""Which URLs and IP addresses an outbound call may dial, and the operator's allow-list of exceptions."""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from yarl import URL

from topology.errors import AddressRefused, DeliveryFailed

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
SCHEMES = frozenset({"http", "https"})
DNS_TIMEOUT_S = 5.0  # a resolver that never answers must not hold a request or a delivery

_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
# Labels that inet_aton reads as numbers (``127.1``, ``0x7f000001``, ``017700000001``): such a
# "name" is an address in disguise, so it is never treated as a host name.
_NUMERIC = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*\.?")

# Checked in order, so the most specific reason wins (the metadata address before link-local).
# The table is explicit rather than ``is_private``/``is_global`` because those changed
# meaning between Python patch releases (3.11.10, 3.12.4) and leave 100.64.0.0/10 undecided.
_REFUSED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ip_network(net), why)
    for net, why in (
        ("169.254.169.254/32", "cloud metadata"),  # AWS, GCP, Azure
        ("100.100.100.200/32", "cloud metadata"),  # Alibaba
        ("192.0.0.192/32", "cloud metadata"),  # Oracle
        ("0.0.0.0/8", "unspecified"),  # Linux dials 0.0.0.0 as the local host
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("169.254.0.0/16", "link-local"),
        ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
        ("192.0.2.0/24", "documentation"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("192.88.99.0/24", "reserved (6to4 relay anycast)"),
        ("198.18.0.0/15", "benchmarking"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # includes the broadcast 255.255.255.255
        ("fd00:ec2::254/128", "cloud metadata"),  # AWS
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "private (local-use NAT64)"),
        ("100::/64", "reserved (discard-only)"),
        ("2001::/23", "reserved (IETF protocol assignments)"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "reserved (site-local)"),
        ("ff00::/8", "multicast"),
    )
)
# Everything outside global unicast is reserved, unassigned or local; the embedded-IPv4
# forms outside it (IPv4-mapped, NAT64) are judged first, by the IPv4 address they carry.
_GLOBAL_UNICAST_V6 = IPv6Network("2000::/3")
_NAT64 = IPv6Network("64:ff9b::/96")


def host_key(host: str) -> str:
    """Return ``host`` as compared by allow-lists and pins: lower case, without the root dot."""
    host = host.lower()
    return host[:-1] if host.endswith(".") and not host.endswith("..") else host


def is_numeric_host(host: str) -> bool:
    """Return whether ``host`` is an IPv4 address in a legacy numeric form (``127.1``, ``0x7f000001``)."""
    return _NUMERIC.fullmatch(host.lower()) is not None and parse_address(host) is None


def is_host_name(host: str) -> bool:
    """Return whether ``host`` is a DNS name (not an address, in any numeric disguise)."""
    name = host_key(host)
    if not name or len(name) > 253 or _NUMERIC.fullmatch(name):
        return False
    return all(_LABEL.fullmatch(label) for label in name.split("."))


@dataclass(frozen=True)
class AllowList:
    """Addresses, networks and host names an operator lets outbound calls reach anyway."""

    networks: frozenset[IPNetwork] = field(default_factory=frozenset)
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, text: str) -> AllowList:
        """Return the allow-list written as ``127.0.0.1,10.0.0.0/8,localhost`` (commas or spaces)."""
        networks: set[IPNetwork] = set()
        hosts: set[str] = set()
        for entry in text.replace(",", " ").split():
            try:
                networks.add(ip_network(entry))
                continue
            except ValueError as exc:
                if "/" in entry or ":" in entry or is_numeric_host(entry):
                    raise ValueError(
                        f"allow-list entry {entry!r} is not an address or network: {exc}; "
                        "write e.g. 127.0.0.1, 10.0.0.0/8 or fd00::/8"
                    ) from None
            if not is_host_name(entry):
                raise ValueError(
                    f"allow-list entry {entry!r} is not a host name; write e.g. localhost "
                    "or hooks.internal (no wildcards, schemes or ports)"
                )
            hosts.add(host_key(entry))
        return cls(networks=frozenset(networks), hosts=frozenset(hosts))


def embedded_ipv4(address: IPv6Address) -> tuple[IPv4Address, ...]:
    """Return the IPv4 addresses an IPv6 transition form carries (mapped, NAT64, 6to4, Teredo)."""
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if address in _NAT64:
        return (IPv4Address(int(address) & 0xFFFFFFFF),)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo
    return ()


def refusal(address: IPAddress, allow: AllowList | None = None, *, host: str = "") -> str | None:
    """Return why ``address`` (reached through URL host ``host``) may not be dialled, or None."""
    if allow is not None and (
        (host and host_key(host) in allow.hosts) or any(address in net for net in allow.networks)
    ):
        return None
    if isinstance(address, IPv6Address) and (embedded := embedded_ipv4(address)):
        # A transition form reaches whatever IPv4 host it carries, so that host decides.
        for inner in embedded:
            why = refusal(inner, allow)
            if why is not None:
                return f"embeds {inner}: {why}"
        return None
    why = next((f"{why} ({net})" for net, why in _REFUSED if address in net), None)
    if why is None and isinstance(address, IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return f"reserved (outside global unicast {_GLOBAL_UNICAST_V6})"
    return why


def parse_address(text: str) -> IPAddress | None:
    """Return ``text`` as an IP address when it is one in canonical form, else None."""
    try:
        return ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Target:
    """A callback URL whose host resolved, once, to addresses that may all be dialled."""

    url: URL
    host: str
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
    name = host_key(host)
    if (name == "localhost" or name.endswith(".localhost")) and name not in allow.hosts:
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
    return Target(url=url, host=host, addresses=addresses)


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
