"""Transport security against a TLS-only RabbitMQ node with mutual TLS (tests/tlsbroker.py).

Both publishers (aio-pika and pika), the topology apply and the management client go over
TLS with a client certificate, logging in by password or by the certificate (SASL EXTERNAL);
a client without a certificate, with another CA's or with an expired one is refused, and so
is plaintext.
"""

from __future__ import annotations

import asyncio

import pytest

from producers.pika_publisher import PikaPublisher
from producers.publisher import ConfirmedPublisher
from tests.broker import TestsManagementClient, depth
from tests.tlsbroker import USER, TlsBroker, tls_vhost
from topology.apply import apply_topology
from topology.broker import connect
from topology.compiled import CompiledTopology
from topology.envelope import Envelope
from topology.errors import BrokerUnavailableError, ManagementApiError
from topology.management import ManagementClient
from topology.settings import BrokerSettings, read_section

pytestmark = pytest.mark.tls

# The certificates a client may not show (none, another CA's, an expired one) and the TLS
# alert that refuses each.
REFUSED = [
    pytest.param("", "CERTIFICATE_REQUIRED", id="no certificate"),
    pytest.param("stranger", "UNKNOWN_CA", id="another CA's certificate"),
    pytest.param("expired", "CERTIFICATE_EXPIRED", id="an expired certificate"),
]


async def _connections(management: TestsManagementClient, vhost: str, count: int) -> list[dict]:
    """Return the connections on ``vhost`` once there are ``count`` of them."""
    async with asyncio.timeout(15):
        while True:  # the connection list has no event to await
            listed = await management.connections(vhost)
            if len(listed) >= count:
                return listed
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("external", [False, True], ids=["password", "certificate (EXTERNAL)"])
async def test_both_publishers_publish_over_mutual_tls(
    tls_broker: TlsBroker, topology: CompiledTopology, external: bool
):
    async with tls_vhost(tls_broker) as vhost:
        settings = tls_broker.settings(vhost, external=external)
        await apply_topology(topology, settings)  # AMQP over TLS and the management API over HTTPS
        aio = await ConfirmedPublisher.connect(settings, topology, name="tls aio-pika")
        async with aio, await PikaPublisher.connect(settings, topology, name="tls pika") as pika:
            await aio.publish(Envelope.new("email", {"by": "aio-pika"}))
            await pika.publish(Envelope.new("email", {"by": "pika"}))
            async with TestsManagementClient(settings) as management:
                listed = await _connections(management, vhost, 2)
        async with await connect(settings, name="tls check") as connection:
            assert await depth(await connection.channel(), "taskq.email") == 2
    seen = {
        (c["client_properties"]["connection_name"], c["ssl"], c["auth_mechanism"], c["user"])
        for c in listed
    }
    mechanism = "EXTERNAL" if external else "PLAIN"
    assert seen == {
        ("tls aio-pika", True, mechanism, USER),
        ("tls pika", True, mechanism, USER),
    }


@pytest.mark.parametrize(("cert", "alert"), REFUSED)
async def test_a_client_without_a_good_certificate_is_refused_everywhere(
    tls_broker: TlsBroker, topology: CompiledTopology, cert: str, alert: str
):
    settings = tls_broker.settings(cert=cert)
    # With TLS 1.3 the refusal comes after the client's side of the handshake: an alert, or
    # just a reset when the broker closes first.
    with pytest.raises(BrokerUnavailableError, match="TASKQ_BROKER_TLS_"):
        await connect(settings, name="refused")
    with pytest.raises(BrokerUnavailableError, match="TASKQ_BROKER_TLS_"):
        await PikaPublisher.connect(settings, topology, name="refused")
    with pytest.raises(ManagementApiError, match=f"ALERT_{alert}.*TASKQ_BROKER_TLS_"):
        async with ManagementClient(settings) as management:
            await management.listing("/", "queues")


async def test_a_client_that_does_not_trust_the_brokers_ca_does_not_connect(
    tls_broker: TlsBroker, topology: CompiledTopology
):
    settings = tls_broker.settings().model_copy(
        update={"broker_tls_ca_file": str(tls_broker.certs.stranger_ca)}
    )
    with pytest.raises(BrokerUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
        await connect(settings, name="distrustful")
    with pytest.raises(BrokerUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
        await PikaPublisher.connect(settings, topology, name="distrustful")
    with pytest.raises(ManagementApiError, match="CERTIFICATE_VERIFY_FAILED"):
        async with ManagementClient(settings) as management:
            await management.listing("/", "queues")


async def test_plaintext_finds_no_listener(tls_broker: TlsBroker, topology: CompiledTopology):
    tls = tls_broker.env()
    plain = read_section(
        BrokerSettings,
        {
            "TASKQ_AMQP_URL": tls["TASKQ_AMQP_URL"].replace("amqps://", "amqp://"),
            "TASKQ_MANAGEMENT_URL": tls["TASKQ_MANAGEMENT_URL"].replace("https://", "http://"),
        },
    )
    with pytest.raises(BrokerUnavailableError):
        await connect(plain, name="plaintext")
    with pytest.raises(BrokerUnavailableError):
        await PikaPublisher.connect(plain, topology, name="plaintext")
    with pytest.raises(ManagementApiError):
        async with ManagementClient(plain) as management:
            await management.listing("/", "queues")
    # The node listens for AMQP over TLS and HTTPS only (and its peers, on loopback).
    async with ManagementClient(tls_broker.settings()) as management:
        overview = await management._request("GET", "/api/overview")
    assert sorted(listener["protocol"] for listener in overview["listeners"]) == [
        "amqp/ssl",
        "clustering",
        "https",
    ]
