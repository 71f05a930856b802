"""Shared fixtures: the real broker in a vhost of our own, and hypothesis profiles."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, ExitStack, asynccontextmanager
from typing import TypeVar
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, settings

from tests.broker import TestsManagementClient
from tests.helpers import scratch_vhost
from tests.localcluster import LocalCluster, running_cluster
from tests.tlsbroker import StartError, TlsBroker, running_tls_broker
from tests.tlsbroker import tls_vhost as fresh_tls_vhost
from tests.tlspostgres import TlsPostgres, running_tls_postgres
from topology.apply import apply_topology
from topology.compiled import CompiledTopology, compile_topology
from topology.loader import load_topology
from topology.settings import BrokerSettings, load_settings

CI = os.environ.get("CI", "").lower() == "true"
T = TypeVar("T")

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if CI else "dev"))


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def broker_settings() -> BrokerSettings:
    """Return settings for the local broker; fail under CI=true when it is missing."""
    base = load_settings().broker
    ok = _reachable("127.0.0.1", 5672) and _reachable("127.0.0.1", 15672)
    if not ok:
        message = "RabbitMQ (5672) with the management API (15672) is not reachable"
        if CI:
            pytest.fail(f"{message}; CI must start it (see .ci/run)")
        pytest.skip(f"{message}; start it with `rabbitmq-server -detached`")
    return base


@pytest.fixture
def vhost(broker_settings: BrokerSettings) -> Iterator[BrokerSettings]:
    """Create a fresh vhost for one test and delete it afterwards."""
    user, password = broker_settings.management_credentials
    base = broker_settings.management_base
    with (
        httpx.Client(base_url=base, auth=(user, password), timeout=10) as http,
        scratch_vhost(http, user) as name,
    ):
        yield broker_settings.with_vhost(name)


@pytest.fixture
def topology() -> CompiledTopology:
    """Return the packaged default topology, compiled."""
    return compile_topology(load_topology())


@pytest.fixture
async def applied(vhost: BrokerSettings, topology: CompiledTopology) -> BrokerSettings:
    """Return settings of a fresh vhost that holds the default topology."""
    await apply_topology(topology, vhost)
    return vhost


@pytest.fixture
async def management(broker_settings: BrokerSettings) -> AsyncIterator[TestsManagementClient]:
    """Return a management API client for the local broker."""
    async with TestsManagementClient(broker_settings) as client:
        yield client


@pytest.fixture(scope="session")
def tls_broker() -> Iterator[TlsBroker]:
    """Run a TLS-only RabbitMQ node of the session's own; fail under CI=true when it cannot start."""
    with ExitStack() as stack:  # stops the node at the end of the session, whatever failed
        yield _started(stack, running_tls_broker(), "TLS RabbitMQ node", "rabbitmq-server")


@pytest.fixture(scope="session")
def own_cluster() -> Iterator[LocalCluster]:
    """Run a three-node RabbitMQ cluster of the session's own, to kill nodes of; fail under CI=true if it cannot start."""
    with ExitStack() as stack:  # stops the nodes at the end of the session, whatever failed
        yield _started(stack, running_cluster(3), "RabbitMQ cluster of our own", "rabbitmq-server")


@pytest.fixture(scope="session")
def tls_postgres() -> Iterator[TlsPostgres]:
    """Run a TLS-only PostgreSQL cluster of the session's own; fail under CI=true when it cannot start."""
    with ExitStack() as stack:  # stops the cluster at the end of the session, whatever failed
        yield _started(stack, running_tls_postgres(), "TLS PostgreSQL cluster", "postgresql")


def _started(stack: ExitStack, server: AbstractContextManager[T], what: str, package: str) -> T:
    """Start ``server`` on ``stack``; fail under CI=true when it cannot start, else skip."""
    try:
        return stack.enter_context(server)
    except (FileNotFoundError, StartError) as exc:
        message = f"no {what}: {exc}"
        if CI:
            pytest.fail(f"{message}; CI must install {package} (deploy/local/env.sh)")
        pytest.skip(message)


@pytest.fixture
def tls_vhost(tls_broker: TlsBroker) -> Iterator[str]:
    """Create a fresh vhost on the TLS node for one test and delete it afterwards."""
    with fresh_tls_vhost(tls_broker) as name:
        yield name


POSTGRES_URL = os.environ.get(
    "TASKQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """Return the admin DSN of the local PostgreSQL; fail under CI=true when it is missing."""
    parts = urlsplit(POSTGRES_URL)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError:
        message = f"PostgreSQL is not reachable at {host}:{port}"
        if CI:
            pytest.fail(f"{message}; CI must start it (see .ci/run)")
        pytest.skip(f"{message}; start it or set TASKQ_TEST_POSTGRES_URL")
    return POSTGRES_URL


@asynccontextmanager
async def scratch_database(admin_url: str) -> AsyncIterator[str]:
    """Create a database of our own, yield its DSN, and drop it afterwards."""
    name = f"taskq_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


REDIS_URL = os.environ.get("TASKQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Return the URL of the local Redis; fail under CI=true when it is missing."""
    parts = urlsplit(REDIS_URL)
    if not _reachable(parts.hostname or "127.0.0.1", parts.port or 6379):
        message = f"Redis is not reachable at {REDIS_URL}"
        if CI:
            pytest.fail(f"{message}; CI must start it (ensure_redis in deploy/local/env.sh)")
        pytest.skip(f"{message}; start redis-server or set TASKQ_TEST_REDIS_URL")
    return REDIS_URL


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """Return a key prefix of this test's own on the local Redis; its keys are deleted after."""
    import redis.asyncio as aioredis

    prefix = f"taskq-test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def promtool() -> str:
    """Return promtool's path; fail under CI=true when it is missing, else skip."""
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is not installed (Debian package prometheus)"
        if CI:
            pytest.fail(f"{message}; CI must install it (ensure_promtool in deploy/local/env.sh)")
        pytest.skip(f"{message}: apt-get install -y --no-install-recommends prometheus")
    return path
