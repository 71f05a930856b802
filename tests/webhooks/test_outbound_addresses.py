from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhooks.outbound.addresses import AllowList, embedded_ipv4, refusal

# The networks the brief names, written out here so the test checks the table, not copies it.
REFUSED_V4 = [
    IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
]
REFUSED_V6 = [
    IPv6Network(n)
    for n in (
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
        "fec0::/10",
        "2001:db8::/32",
    )
]


def _in(network: IPv4Network | IPv6Network) -> st.SearchStrategy[IPv4Address | IPv6Address]:
    low, high = int(network.network_address), int(network.broadcast_address)
    make = IPv4Address if network.version == 4 else IPv6Address
    return st.integers(low, high).map(make)


refused_v4 = st.sampled_from(REFUSED_V4).flatmap(_in)
refused_v6 = st.sampled_from(REFUSED_V6).flatmap(_in)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("192.0.0.192", "cloud metadata"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.255", "carrier-grade NAT"),
        ("198.18.0.1", "benchmarking"),
        ("192.0.2.1", "documentation"),
        ("2001:db8::1", "documentation"),
        ("::ffff:127.0.0.1", "embeds 127.0.0.1: loopback"),
        ("::ffff:169.254.169.254", "embeds 169.254.169.254: cloud metadata"),
        ("2002:a9fe:a9fe::", "embeds 169.254.169.254: cloud metadata"),
        ("2002:7f00:1::1", "embeds 127.0.0.1: loopback"),
        ("64:ff9b::a9fe:a9fe", "embeds 169.254.169.254: cloud metadata"),
        ("64:ff9b::10.0.0.1", "embeds 10.0.0.1: private"),
        ("2001:0:a9fe:a9fe::", "embeds 169.254.169.254: cloud metadata"),  # Teredo server
        ("2001:0:808:808:0:0:80ff:fffe", "embeds 127.0.0.1: loopback"),  # Teredo client
        ("::127.0.0.1", "reserved"),  # deprecated IPv4-compatible form
        ("::ffff:0:7f00:1", "reserved"),  # IPv4-translated form
        ("64:ff9b:1::1", "private"),
        ("100::1", "reserved"),
        ("4000::1", "reserved"),
    ],
)
def test_refused_addresses_say_why(address: str, reason: str):
    why = refusal(ip_address(address))
    assert why is not None
    assert why.startswith(reason), why
    assert refusal(ip_address(address)) is not None


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "100.63.255.255",  # just below CGNAT
        "100.128.0.0",  # just above CGNAT
        "172.15.255.255",
        "172.32.0.0",
        "2606:4700:4700::1111",
        "2a00:1450:4001:81b::200e",
        "::ffff:8.8.8.8",
        "2002:808:808::1",
        "64:ff9b::8.8.8.8",
        "2001:0:808:808:0:0:f7f7:f7f7",  # Teredo: server 8.8.8.8, client 8.8.8.8
    ],
)
def test_public_addresses_may_be_dialled(address: str):
    assert refusal(ip_address(address)) is None


@given(refused_v4)
def test_any_address_in_a_refused_ipv4_network_is_refused(address: IPv4Address | IPv6Address):
    assert refusal(address) is not None


@given(refused_v6)
def test_any_address_in_a_refused_ipv6_network_is_refused(address: IPv4Address | IPv6Address):
    assert refusal(address) is not None


@given(refused_v4)
def test_every_ipv6_form_of_a_refused_ipv4_is_refused(address: IPv4Address | IPv6Address):
    v4 = int(address)
    forms = [
        IPv6Address((0xFFFF << 32) | v4),  # ::ffff:a.b.c.d
        IPv6Address((0x0064FF9B << 96) | v4),  # 64:ff9b::a.b.c.d
        IPv6Address((0x2002 << 112) | (v4 << 80)),  # 2002:aabb:ccdd::
        IPv6Address((0x20010000 << 96) | (v4 << 64) | 0x08080808),  # Teredo, server side
        IPv6Address((0x20010000 << 96) | (0x08080808 << 64) | (v4 ^ 0xFFFFFFFF)),  # client
    ]
    for form in forms:
        assert address in embedded_ipv4(form)
        assert refusal(form) is not None, form


@given(refused_v4)
def test_the_allow_list_admits_its_networks_and_their_ipv6_forms(
    address: IPv4Address | IPv6Address,
):
    allow = AllowList(networks=frozenset({ip_network(f"{address}/32")}))
    assert refusal(address, allow) is None
    assert refusal(IPv6Address((0xFFFF << 32) | int(address)), allow) is None


def test_the_allow_list_admits_only_what_it_names():
    allow = AllowList.parse("127.0.0.1, 10.0.0.0/8 localhost")
    assert refusal(ip_address("127.0.0.1"), allow) is None
    assert refusal(ip_address("10.200.0.1"), allow) is None
    assert refusal(ip_address("127.0.0.2"), allow) is not None
    assert refusal(ip_address("169.254.169.254"), allow) is not None
    assert refusal(ip_address("::1"), allow) is not None
    # A name on the list admits whatever it resolves to; a different name does not.
    assert refusal(ip_address("::1"), allow, host="LOCALHOST.") is None
    assert refusal(ip_address("::1"), allow, host="localhost.evil.example") is not None


def test_allow_list_parsing():
    allow = AllowList.parse("127.0.0.1,10.0.0.0/8,localhost")
    assert allow.networks == {ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8")}
    assert allow.hosts == {"localhost"}
    assert AllowList.parse("") == AllowList() == AllowList.parse(" , ")
    assert AllowList.parse("fd00::/8 Hooks.Internal.") == AllowList(
        networks=frozenset({ip_network("fd00::/8")}), hosts=frozenset({"hooks.internal"})
    )
    # Order does not matter: a session's allow-list is compared with the call's.
    assert AllowList.parse("a.example,10.0.0.0/8") == AllowList.parse("10.0.0.0/8 a.example")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("10.0.0.1/8", "host bits set"),
        ("300.1.2.3", "not an address or network"),
        ("2130706433", "not an address or network"),
        ("0x7f000001", "not an address or network"),
        ("*.example.com", "not a host name"),
        ("http://example.com", "not an address or network"),
        ("under_score-.example", "not a host name"),
    ],
)
def test_allow_list_refuses_what_it_cannot_read(text: str, words: str):
    with pytest.raises(ValueError, match=words):
        AllowList.parse(text)
