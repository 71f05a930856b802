"""Fixtures for the autoscaler tests: a local Kubernetes API serving the scale subresource."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from consumers.autoscaler.kube_api import KubeApi
from consumers.autoscaler.kubernetes import KubernetesScaler
from tests.consumers.autoscaler.certs import Certs, make_certs
from tests.consumers.autoscaler.kube_fake import FakeKube

NAMESPACE = "taskq"
TOKEN = "test-token"


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube(
        token=TOKEN,
        replicas={(NAMESPACE, "taskq-worker-email"): 1, (NAMESPACE, "taskq-worker-github"): 0},
    )


@pytest.fixture
async def kube(fake: FakeKube) -> AsyncIterator[TestServer]:
    """Serve ``fake`` over plain HTTP on 127.0.0.1."""
    server = TestServer(fake.app())
    await server.start_server()
    yield server
    await server.close()


def server_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def scaler(kube: TestServer) -> AsyncIterator[KubernetesScaler]:
    async with KubernetesScaler(
        KubeApi(server_url(kube), token=TOKEN), namespace=NAMESPACE
    ) as scaler:
        yield scaler


@pytest.fixture(scope="session")
def certs() -> Certs:
    return make_certs()
