"""Fixtures for the autoscaler tests: a local Kubernetes API serving the scale subresource."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestServer

from consumers.autoscaler.kubernetes import KubeApi, KubernetesScaler
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


def kubeconfig(
    path: Path,
    server: str,
    *,
    user: dict[str, Any] | None = None,
    cluster: dict[str, Any] | None = None,
    namespace: str | None = NAMESPACE,
    name: str = "dev",
) -> Path:
    """Write a kubeconfig whose current context ``name`` is ``server`` as ``user`` (a token)."""
    context = {"cluster": name, "user": name} | ({"namespace": namespace} if namespace else {})
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": name,
        "contexts": [{"name": name, "context": context}],
        "clusters": [{"name": name, "cluster": {"server": server} | (cluster or {})}],
        "users": [{"name": name, "user": user if user is not None else {"token": TOKEN}}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


async def api_at(url: str, folder: Path, *, token: str | None = TOKEN) -> KubeApi:
    """Return the API at ``url`` as loaded from a kubeconfig with ``token`` (or no user)."""
    user = {"token": token} if token else {}
    return await KubeApi.from_kubeconfig(kubeconfig(folder / "config", url, user=user))


@pytest.fixture
async def scaler(kube: TestServer, tmp_path: Path) -> AsyncIterator[KubernetesScaler]:
    async with KubernetesScaler(await api_at(server_url(kube), tmp_path)) as scaler:
        yield scaler


@pytest.fixture(scope="session")
def certs() -> Certs:
    return make_certs()
