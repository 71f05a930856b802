"""Which IP addresses an outbound call may dial, and the operator's allow-list of exceptions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
# Labels that inet_aton reads as numbers (``127.1``, ``0x7f000001``, ``017700000001``): such a
# "name" is an address in disguise, so it is never treated as a host name.
_NUMERIC = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*\.?")

# Checked in order, so the most specific reason wins (the metadata address before link-local).
# The tables are explicit rather than ``is_private``/``is_global`` because those changed
# meaning between Python patch releases (3.11.10, 3.12.4) and leave 100.64.0.0/10 undecided.
_REFUSED_V4: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), why)
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
    )
)
_REFUSED_V6: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), why)
    for net, why in (
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

    def admits_address(self, address: IPAddress) -> bool:
        """Return whether ``address`` lies in one of the allowed networks."""
        return any(address in network for network in self.networks)

    def admits_host(self, host: str) -> bool:
        """Return whether the URL host name ``host`` is allowed whatever it resolves to."""
        return host_key(host) in self.hosts


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
    if allow is not None and ((host and allow.admits_host(host)) or allow.admits_address(address)):
        return None
    if isinstance(address, IPv4Address):
        return _refused(_REFUSED_V4, address)
    embedded = embedded_ipv4(address)
    if embedded:
        # A transition form reaches whatever IPv4 host it carries, so that host decides.
        for inner in embedded:
            why = refusal(inner, allow)
            if why is not None:
                return f"embeds {inner}: {why}"
        return None
    why = _refused(_REFUSED_V6, address)
    if why is None and address not in _GLOBAL_UNICAST_V6:
        return f"reserved (outside global unicast {_GLOBAL_UNICAST_V6})"
    return why


def parse_address(text: str) -> IPAddress | None:
    """Return ``text`` as an IP address when it is one in canonical form, else None."""
    try:
        return ip_address(text)
    except ValueError:
        return None


def _refused(table: tuple[tuple[IPNetwork, str], ...], address: IPAddress) -> str | None:
    for network, why in table:
        if address in network:
            return f"{why} ({network})"
    return None
