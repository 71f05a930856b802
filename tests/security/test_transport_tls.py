"""Transport security against a TLS-only RabbitMQ node with mutual TLS (tests/tlsbroker.py).

Both publishers (aio-pika and pika), the topology apply and the management client go over
TLS with a client certificate, logging in by password or by the certificate (SASL EXTERNAL);
``taskctl up`` runs the whole pipeline so, serving the API over HTTPS to callers with a client
certificate. A client without a certificate, with another CA's or with an expired one is
refused at every door, and so is plaintext.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from jobstore.model import open_store
from producers.pika_publisher import PikaPublisher
from producers.publisher import ConfirmedPublisher
from tests.broker import TestsManagementClient, depth
from tests.credentials import bearer, issue_key
from tests.helpers import interrupted, reap, wait_healthy
from tests.taskctl.test_up import free_port, start_up, up_env
from tests.tlsbroker import USER, TlsBroker
from tests.tlspostgres import TlsPostgres
from topology.apply import apply_topology
from topology.broker import connect
from topology.compiled import CompiledTopology
from topology.envelope import Envelope
from topology.errors import BrokerUnavailableError, ManagementApiError, StoreError
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
    tls_broker: TlsBroker, tls_vhost: str, topology: CompiledTopology, external: bool
):
    settings = tls_broker.settings(tls_vhost, external=external)
    await apply_topology(topology, settings)  # AMQP over TLS and the management API over HTTPS
    aio = await ConfirmedPublisher.connect(settings, topology, name="tls aio-pika")
    async with aio, await PikaPublisher.connect(settings, topology, name="tls pika") as pika:
        await aio.publish(Envelope.new("email", {"by": "aio-pika"}))
        await pika.publish(Envelope.new("email", {"by": "pika"}))
        async with TestsManagementClient(settings) as management:
            listed = await _connections(management, tls_vhost, 2)
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


def test_taskctl_up_runs_the_whole_pipeline_over_tls(
    tls_broker: TlsBroker, tls_vhost: str, tmp_path: Path
):
    """The API over HTTPS wanting client certificates; the API, workers and autoscaler log in by certificate."""
    certs = tls_broker.certs
    port = free_port()
    env = {
        **up_env_plain(tmp_path, port),
        **tls_broker.env(tls_vhost, external=True),
        "TASKQ_API_TLS_CERT_FILE": str(certs.server),
        "TASKQ_API_TLS_KEY_FILE": str(certs.server_key),
        "TASKQ_API_TLS_CLIENT_CA_FILE": str(certs.ca),
    }
    base = f"https://127.0.0.1:{port}"
    process = start_up(env)
    try:
        wait_healthy(base, process, verify=certs.client_context())
        key = (tmp_path / ".taskq" / "admin.key").read_text().strip()
        with httpx.Client(
            base_url=base, verify=certs.client_context(), headers=bearer(key), timeout=10
        ) as api:
            submitted = api.post(
                "/jobs", json={"type": "email", "payload": {"to": "a@example.com"}}
            )
            assert submitted.status_code == 202, submitted.text
            job = _finished(api, submitted.json()["id"])
        assert (job["status"], job["result"]["to"]) == ("succeeded", "a@example.com")
        # A good certificate is not a credential: the API still wants a key.
        anonymous = httpx.get(f"{base}/jobs", verify=certs.client_context(), timeout=5)
        assert anonymous.status_code == 401
        # At the API's door: no certificate, another CA's, an expired one, or plain HTTP.
        for kind in ("", "stranger", "expired"):
            with pytest.raises(httpx.TransportError):
                httpx.get(f"{base}/healthz", verify=certs.client_context(kind), timeout=5)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        connections = _listed(tls_broker, tls_vhost, {"taskq api", "taskq worker email"})
        rest, _ = interrupted(process)
    finally:
        reap(process)
    assert process.returncode == 0, rest
    assert not [line for line in rest.splitlines() if json.loads(line)["level"] == "ERROR"]
    # Every connection of the pipeline is TLS and logged in as the certificate's name.
    names = {c["client_properties"]["connection_name"] for c in connections}
    assert {"taskq api", "taskq worker email"} <= names, names
    assert {(c["ssl"], c["auth_mechanism"], c["user"]) for c in connections} == {
        (True, "EXTERNAL", USER)
    }


def up_env_plain(tmp_path: Path, port: int) -> dict[str, str]:
    """Return ``taskctl up``'s environment without broker settings: files under ``tmp_path``, API on ``port``."""
    env = up_env(BrokerSettings(), tmp_path, port)
    del env["TASKQ_AMQP_URL"]
    return env


def _finished(api: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    job: dict[str, Any] = {}
    while time.monotonic() < deadline and job.get("status") != "succeeded":  # a child process
        job = api.get(f"/jobs/{job_id}").json()
        time.sleep(0.2)
    return job


def _listed(broker: TlsBroker, vhost: str, names: set[str]) -> list[dict[str, Any]]:
    """Return the connections on ``vhost`` once those called ``names`` are among them (HTTPS API)."""
    base = f"https://127.0.0.1:{broker.https_port}"
    auth = (USER, broker.password)
    path = f"/api/vhosts/{quote(vhost, safe='')}/connections"
    deadline = time.monotonic() + 20
    with httpx.Client(base_url=base, auth=auth, verify=broker.certs.client_context()) as http:
        while True:  # listed once the broker emits their statistics (every 5 s by default)
            listed: list[dict[str, Any]] = http.get(path).json()
            seen = {c.get("client_properties", {}).get("connection_name") for c in listed}
            if names <= seen or time.monotonic() > deadline:
                return listed
            time.sleep(0.5)


@pytest.mark.postgres
async def test_the_postgres_store_takes_tls_and_a_client_certificate_from_its_dsn(
    tls_postgres: TlsPostgres,
):
    store = open_store(tls_postgres.verified_dsn())
    try:
        await store.migrate()
        await issue_key(store)
        assert len(await store.list_api_keys()) == 1
    finally:
        await store.close()
    # Refused: no certificate, another CA's, an expired one (the server closes at the handshake;
    # its alert may not arrive first), a server this client cannot verify, plaintext.
    refused = [
        (tls_postgres.verified_dsn(""), "requires a valid client certificate"),
        (tls_postgres.verified_dsn("stranger"), "closed|SSL"),
        (tls_postgres.verified_dsn("expired"), "closed|SSL"),
        (tls_postgres.verified_dsn(ca="stranger_ca"), "CERTIFICATE_VERIFY_FAILED"),
        (tls_postgres.dsn(sslmode="disable"), "pg_hba.conf rejects .* no encryption"),
    ]
    for dsn, says in refused:
        store = open_store(dsn)
        try:
            with pytest.raises(StoreError, match=says):
                await store.ping()
        finally:
            await store.close()
    # Every session the cluster served was TLS, as the certificate's name.
    connection = await asyncpg.connect(tls_postgres.verified_dsn())
    try:
        rows = await connection.fetch(
            "SELECT ssl, client_dn FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)"
            " WHERE backend_type = 'client backend'"
        )
    finally:
        await connection.close()
    assert {(row["ssl"], row["client_dn"].rpartition("/")[2]) for row in rows} == {
        (True, f"CN={USER}")
    }
