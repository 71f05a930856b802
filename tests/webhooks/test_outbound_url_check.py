from __future__ import annotations

import socket
from ipaddress import ip_address

import pytest

from tests.webhooks.conftest import StubDns
from topology.errors import AddressRefused, DeliveryFailed
from webhooks.outbound.addresses import AllowList, check_callback_url, parse_callback_url

NOBODY = AllowList()

# SSRF probes from reliability.md W6, each with the reason it must be refused for.
PROBES = [
    ("http://127.0.0.1:{port}/", "loopback"),
    ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
    ("http://[::1]:{port}/", "loopback"),
    ("http://[::ffff:169.254.169.254]/", "embeds 169.254.169.254: cloud metadata"),
    ("http://[2002:a9fe:a9fe::]/", "embeds 169.254.169.254: cloud metadata"),
    ("http://[64:ff9b::a9fe:a9fe]/", "embeds 169.254.169.254: cloud metadata"),
    ("http://[2001:0:a9fe:a9fe::]/", "embeds 169.254.169.254: cloud metadata"),
    ("http://0x7f000001:{port}/", "which is loopback"),
    ("http://2130706433:{port}/", "which is loopback"),
    ("http://017700000001:{port}/", "which is loopback"),
    ("http://127.1:{port}/", "which is loopback"),
    ("http://localhost:{port}/", "names the local host"),
    ("http://localhost.:{port}/", "names the local host"),
    ("http://LocalHost.:{port}/", "names the local host"),
    ("http://api.localhost:{port}/", "names the local host"),
    ("http://0.0.0.0:{port}/", "unspecified"),
    ("http://[::]:{port}/", "unspecified"),
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://100.100.100.200/latest/meta-data", "cloud metadata"),
    ("http://10.0.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("file:///etc/passwd", "scheme file://"),
    ("gopher://x/", "scheme gopher://"),
    ("ftp://example.com/", "scheme ftp://"),
    ("dict://127.0.0.1:11211/", "scheme dict://"),
    ("//example.com/", "scheme none://"),
    ("http:///path", "names no host"),
    ("http://user:pass@example.com/", "userinfo"),
    ("http://user@example.com/", "userinfo"),
    ("http://example.com:0/", "port 0"),
    ("http://%31%32%37.0.0.1/", "neither an IP address nor a host name"),
    ("http://example.com../", "neither an IP address nor a host name"),
    ("http://127.0.0.1.:{port}/", "not a valid IPv4 address"),
    ("http://0x:{port}/", "not a valid IPv4 address"),
    ("http://[::1", "not a URL"),
]


@pytest.mark.parametrize(("probe", "reason"), PROBES)
async def test_registration_refuses_every_probe(probe: str, reason: str):
    with pytest.raises(AddressRefused) as caught:
        await check_callback_url(probe.format(port=8080), NOBODY)
    assert reason in caught.value.reason


async def test_messages_never_repeat_the_password_or_the_query():
    with pytest.raises(AddressRefused) as caught:
        await check_callback_url("http://user:hunter2@10.0.0.1/hook?token=s3cret#x", NOBODY)
    assert "hunter2" not in str(caught.value)
    assert "s3cret" not in str(caught.value)
    assert caught.value.url == "http://10.0.0.1/hook"


async def test_a_public_name_passes_and_keeps_every_address(dns: StubDns):
    dns.answer("hooks.example.com", ["93.184.216.34", "2606:2800:220:1::1"])
    target = await check_callback_url("https://Hooks.Example.com/cb?x=1", NOBODY)
    assert target.host == "hooks.example.com"
    assert target.addresses == (ip_address("93.184.216.34"), ip_address("2606:2800:220:1::1"))
    assert target.pinned == ip_address("93.184.216.34")
    assert str(target.url) == "https://hooks.example.com/cb?x=1"


async def test_one_refused_address_among_public_ones_refuses_the_url(dns: StubDns):
    dns.answer("mixed.example.com", ["93.184.216.34", "127.0.0.1"])
    with pytest.raises(AddressRefused, match=r"resolves to 127\.0\.0\.1, which is loopback"):
        await check_callback_url("http://mixed.example.com/", NOBODY)


async def test_a_name_that_does_not_resolve_now_is_retryable(dns: StubDns):
    dns.answer("gone.example.com", socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    with pytest.raises(DeliveryFailed, match=r"cannot resolve gone\.example\.com") as caught:
        await check_callback_url("http://gone.example.com/", NOBODY)
    assert caught.value.status is None


async def test_numeric_disguises_are_read_by_getaddrinfo_without_dns(dns: StubDns):
    with pytest.raises(AddressRefused, match="loopback"):
        await check_callback_url("http://0x7f000001/", NOBODY)
    assert dns.asked == [("0x7f000001", socket.AI_NUMERICHOST)]


async def test_an_allow_listed_numeric_disguise_asks_for_the_plain_address():
    allow = AllowList.parse("127.0.0.1")
    with pytest.raises(AddressRefused, match=r"legacy form of 127\.0\.0\.1; write that"):
        await check_callback_url("http://2130706433/", allow)


async def test_allow_listed_localhost_by_name_resolves(dns: StubDns):
    dns.answer("localhost.", ["127.0.0.1", "::1"])
    target = await check_callback_url("http://localhost.:9000/", AllowList.parse("localhost"))
    assert target.addresses == (ip_address("127.0.0.1"), ip_address("::1"))


def test_parsing_alone_makes_no_lookup_and_accepts_plain_urls():
    url = parse_callback_url("https://hooks.example.com:8443/a/b?c=d")
    assert (url.host, url.port, url.path) == ("hooks.example.com", 8443, "/a/b")
    assert parse_callback_url("http://[2606:4700::1]/").host == "2606:4700::1"


def test_outbound_errors_say_whether_to_retry():
    from topology import errors

    for kind in (errors.AddressRefused, errors.DeliveryRejected, errors.DeliveryFailed):
        assert issubclass(kind, errors.OutboundError)
    assert not issubclass(errors.AddressRefused, errors.DeliveryFailed)
