import socket
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from consumers.autoscaler.kubernetes import KubernetesScaler, ScaleError, target_deployment
from tests.consumers.autoscaler.conftest import NAMESPACE, TOKEN, api_at, server_url
from tests.consumers.autoscaler.kube_fake import FakeKube
from topology.errors import TaskqError

SCALE = "/apis/apps/v1/namespaces/taskq/deployments/taskq-worker-email/scale"


async def test_scale_up_and_down_round_trips(scaler: KubernetesScaler, fake: FakeKube):
    assert await scaler.current("email") == 1
    await scaler.scale("email", 6)
    assert await scaler.current("email") == 6
    assert fake.replicas[(NAMESPACE, "taskq-worker-email")] == 6
    await scaler.scale("email", 0)
    assert await scaler.current("email") == 0
    assert fake.requests[:2] == [("GET", SCALE), ("PATCH", SCALE)]


async def test_a_deployment_at_zero_reads_as_zero_and_scales_up(scaler: KubernetesScaler):
    # The API server leaves spec.replicas out of a Scale at zero.
    assert await scaler.current("github") == 0
    await scaler.scale("github", 3)
    assert await scaler.current("github") == 3


async def test_one_session_and_connection_serve_every_request(
    scaler: KubernetesScaler, fake: FakeKube
):
    for workers in (2, 3, 4):
        await scaler.scale("email", workers)
        assert await scaler.current("email") == workers
    assert len(fake.requests) == 6
    assert len(fake.peers) == 1


async def test_close_then_use_opens_a_new_session(scaler: KubernetesScaler):
    await scaler.current("email")
    await scaler.close()
    assert await scaler.current("email") == 1


async def test_deployment_naming_is_injectable(kube: TestServer, fake: FakeKube, tmp_path: Path):
    fake.replicas[(NAMESPACE, "workers-email")] = 2
    api = await api_at(server_url(kube), tmp_path)
    async with KubernetesScaler(api, deployment=lambda group: f"workers-{group}") as scaler:
        assert await scaler.current("email") == 2


async def test_the_namespace_given_beats_the_kubeconfig_context(
    kube: TestServer, fake: FakeKube, tmp_path: Path
):
    fake.replicas[("other", "taskq-worker-email")] = 5
    api = await api_at(server_url(kube), tmp_path)
    assert api.namespace == NAMESPACE
    async with KubernetesScaler(api, namespace="other") as scaler:
        assert await scaler.current("email") == 5


async def test_unknown_deployment_is_a_404_naming_deployment_and_namespace(
    scaler: KubernetesScaler,
):
    with pytest.raises(ScaleError) as caught:
        await scaler.scale("nope", 2)
    assert caught.value.status == 404
    message = str(caught.value)
    assert "deployment 'taskq-worker-nope' in namespace 'taskq' not found" in message
    assert 'deployments.apps "taskq-worker-nope" not found' in message


@pytest.mark.parametrize("token", ["wrong", None])
async def test_a_bad_or_missing_token_is_a_401(kube: TestServer, tmp_path: Path, token: str | None):
    async with KubernetesScaler(await api_at(server_url(kube), tmp_path, token=token)) as s:
        with pytest.raises(ScaleError) as caught:
            await s.current("email")
    assert caught.value.status == 401
    assert "refused the credentials" in str(caught.value)
    assert "'taskq-worker-email' in namespace 'taskq'" in str(caught.value)


async def test_forbidden_names_the_rbac_rule_to_add(scaler: KubernetesScaler, fake: FakeKube):
    fake.forbidden.add(NAMESPACE)
    with pytest.raises(ScaleError) as caught:
        await scaler.scale("email", 2)
    assert caught.value.status == 403
    assert "verbs get and patch on deployments/scale" in str(caught.value)
    assert isinstance(caught.value, TaskqError)


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"<html>gateway</html>", "not an autoscaling/v1 Scale"),
        (b"[]", "not an autoscaling/v1 Scale"),
        (b'{"kind": "Status", "spec": {}}', "not an autoscaling/v1 Scale"),
        (b'{"kind": "Scale", "spec": {"replicas": "three"}}', "not an autoscaling/v1 Scale"),
        (b'{"kind": "Scale", "spec": {"replicas": -1}}', "spec.replicas -1"),
    ],
)
async def test_garbage_answers_are_scale_errors(
    scaler: KubernetesScaler, fake: FakeKube, answer: bytes, says: str
):
    fake.answer = answer
    with pytest.raises(ScaleError, match=says):
        await scaler.current("email")
    with pytest.raises(ScaleError, match=says):
        await scaler.scale("email", 2)


async def test_an_unreachable_api_is_a_scale_error(tmp_path: Path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = await api_at(f"http://127.0.0.1:{port}", tmp_path)
    async with KubernetesScaler(api) as scaler:
        with pytest.raises(ScaleError, match="cannot reach the Kubernetes API") as caught:
            await scaler.current("email")
    assert caught.value.status is None


async def test_a_stalled_api_times_out_as_a_scale_error(
    kube: TestServer, fake: FakeKube, tmp_path: Path
):
    fake.delay = 2.0
    api = await api_at(server_url(kube), tmp_path)
    async with KubernetesScaler(api, timeout=0.2) as scaler:
        with pytest.raises(ScaleError, match="cannot reach"):
            await scaler.scale("email", 3)


async def test_the_fake_refuses_what_the_api_server_refuses(kube: TestServer):
    # The scaler's PATCH passes because the fake checks what a real API server checks.
    import aiohttp

    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        url = server_url(kube) + SCALE
        async with http.patch(url, json={"spec": {"replicas": 2}}) as reply:
            assert reply.status == 415  # application/json is not a merge patch
        merge = {"Content-Type": "application/merge-patch+json"}
        async with http.patch(url, data=b'{"replicas": 2}', headers=merge) as reply:
            assert reply.status == 422


async def test_a_stream_target_scales_its_sources_reader_deployment(
    scaler: KubernetesScaler, fake: FakeKube
):
    fake.replicas[(NAMESPACE, "taskq-stream-shop")] = 1
    await scaler.scale("stream:shop", 3)
    assert await scaler.current("stream:shop") == 3
    assert fake.replicas[(NAMESPACE, "taskq-stream-shop")] == 3
    assert fake.replicas[(NAMESPACE, "taskq-worker-email")] == 1  # the groups' are untouched
    readers = "/apis/apps/v1/namespaces/taskq/deployments/taskq-stream-shop/scale"
    assert fake.requests == [("PATCH", readers), ("GET", readers)]


def test_targets_name_the_deployments_the_chart_renders():
    assert target_deployment("email") == "taskq-worker-email"
    assert target_deployment("stream:shop") == "taskq-stream-shop"
