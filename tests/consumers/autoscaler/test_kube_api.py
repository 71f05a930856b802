import base64
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestServer

from consumers.autoscaler import kube_api
from consumers.autoscaler.kube_api import KubeApi, KubeConfigError
from consumers.autoscaler.kubernetes import KubernetesScaler, ScaleError
from tests.consumers.autoscaler.certs import Certs
from tests.consumers.autoscaler.conftest import NAMESPACE, TOKEN, server_url
from tests.consumers.autoscaler.kube_fake import FakeKube
from topology.errors import SettingsError


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def leftovers(folder: Path) -> list[Path]:
    return list(folder.glob("taskq-kube-*"))


def service_account(root: Path, *, token: str = TOKEN, ca: bytes | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "token").write_text(token + "\n")
    (root / "namespace").write_text(NAMESPACE)
    if ca is not None:
        (root / "ca.crt").write_bytes(ca)
    return root


def kubeconfig(
    path: Path,
    server: str,
    *,
    user: dict | None = None,
    cluster: dict | None = None,
    namespace: str | None = NAMESPACE,
    name: str = "dev",
) -> Path:
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


@pytest.fixture
async def tls_kube(fake: FakeKube, certs: Certs, tmp_path: Path) -> AsyncIterator[TestServer]:
    """Serve ``fake`` over HTTPS with the test CA's certificate for 127.0.0.1."""
    (tmp_path / "server.crt").write_bytes(certs.server.cert)
    (tmp_path / "server.key").write_bytes(certs.server.key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    server = TestServer(fake.app())
    await server.start_server(ssl=context)
    yield server
    await server.close()


@pytest.fixture
async def mtls_kube(fake: FakeKube, certs: Certs, tmp_path: Path) -> AsyncIterator[TestServer]:
    """Serve ``fake`` over HTTPS, accepting only clients with a certificate from the test CA."""
    (tmp_path / "server.crt").write_bytes(certs.server.cert)
    (tmp_path / "server.key").write_bytes(certs.server.key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=certs.ca.decode())
    context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    context.verify_mode = ssl.CERT_REQUIRED
    server = TestServer(fake.app())
    await server.start_server(ssl=context)
    yield server
    await server.close()


# In-cluster ---------------------------------------------------------------------------------


def test_in_cluster_reads_the_service_account(tmp_path: Path, certs: Certs):
    root = service_account(tmp_path / "sa", ca=certs.ca)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    api = KubeApi.in_cluster(environ=env, account_dir=root)
    assert api.server == "https://10.96.0.1:443"
    assert api.namespace == NAMESPACE
    assert api.authorization() == f"Bearer {TOKEN}"
    assert api.ssl_context is not None
    assert TOKEN not in repr(api)


def test_in_cluster_brackets_an_ipv6_service_address(tmp_path: Path, certs: Certs):
    root = service_account(tmp_path / "sa", ca=certs.ca)
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert KubeApi.in_cluster(environ=env, account_dir=root).server == "https://[fd00::1]:443"


def test_in_cluster_rereads_a_rotated_token(
    tmp_path: Path, certs: Certs, monkeypatch: pytest.MonkeyPatch
):
    root = service_account(tmp_path / "sa", ca=certs.ca)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    api = KubeApi.in_cluster(environ=env, account_dir=root)
    assert api.authorization() == f"Bearer {TOKEN}"
    (root / "token").write_text("rotated")
    assert api.authorization() == f"Bearer {TOKEN}"  # read less than a minute ago
    monkeypatch.setattr(kube_api, "TOKEN_REREAD_SECONDS", 0.0)
    assert api.authorization() == "Bearer rotated"
    (root / "token").unlink()
    assert api.authorization() == "Bearer rotated"  # the last token beats none


def test_outside_a_pod_in_cluster_says_so(tmp_path: Path):
    with pytest.raises(KubeConfigError, match="KUBERNETES_SERVICE_HOST") as caught:
        KubeApi.in_cluster(environ={}, account_dir=tmp_path)
    assert isinstance(caught.value, SettingsError)


def test_in_cluster_without_a_mounted_token_says_so(tmp_path: Path):
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(KubeConfigError, match="automountServiceAccountToken"):
        KubeApi.in_cluster(environ=env, account_dir=tmp_path)


def test_in_cluster_with_a_bad_ca_says_so(tmp_path: Path):
    root = service_account(tmp_path / "sa", ca=b"not a certificate")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(KubeConfigError, match="cannot load the cluster CA"):
        KubeApi.in_cluster(environ=env, account_dir=root)


async def test_in_cluster_scales_over_tls_with_the_service_account(
    tls_kube: TestServer, certs: Certs, tmp_path: Path, fake: FakeKube
):
    root = service_account(tmp_path / "sa", ca=certs.ca)
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(tls_kube.port)}
    api = KubeApi.in_cluster(environ=env, account_dir=root)
    async with KubernetesScaler(api, namespace=api.namespace) as scaler:
        await scaler.scale("email", 4)
        assert await scaler.current("email") == 4
    assert fake.replicas[(NAMESPACE, "taskq-worker-email")] == 4


async def test_a_server_outside_the_ca_is_a_scale_error(tls_kube: TestServer, tmp_path: Path):
    api = KubeApi(
        f"https://127.0.0.1:{tls_kube.port}", ssl_context=ssl.create_default_context(), token=TOKEN
    )
    async with KubernetesScaler(api, namespace=NAMESPACE) as scaler:
        with pytest.raises(ScaleError, match="cannot reach"):
            await scaler.current("email")


# kubeconfig ---------------------------------------------------------------------------------


async def test_kubeconfig_with_a_token_scales_the_test_server(
    kube: TestServer, tmp_path: Path, fake: FakeKube
):
    path = kubeconfig(tmp_path / "config", server_url(kube))
    api = KubeApi.from_kubeconfig(path)
    assert (api.server, api.namespace, api.ssl_context) == (server_url(kube), NAMESPACE, None)
    async with KubernetesScaler(api, namespace=api.namespace) as scaler:
        await scaler.scale("email", 7)
        assert await scaler.current("email") == 7


async def test_kubeconfig_client_certificate_data_over_mutual_tls(
    mtls_kube: TestServer, certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    url = f"https://127.0.0.1:{mtls_kube.port}"
    user = {
        "client-certificate-data": b64(certs.client.cert),
        "client-key-data": b64(certs.client.key),
        "token": TOKEN,
    }
    cluster = {"certificate-authority-data": b64(certs.ca)}
    api = KubeApi.from_kubeconfig(kubeconfig(tmp_path / "config", url, user=user, cluster=cluster))
    async with KubernetesScaler(api, namespace=NAMESPACE) as scaler:
        assert await scaler.current("email") == 1
    assert leftovers(tmp_path) == []  # the PEM files written for ssl are gone


async def test_kubeconfig_without_the_client_certificate_fails_mutual_tls(
    mtls_kube: TestServer, certs: Certs, tmp_path: Path
):
    url = f"https://127.0.0.1:{mtls_kube.port}"
    cluster = {"certificate-authority-data": b64(certs.ca)}
    api = KubeApi.from_kubeconfig(kubeconfig(tmp_path / "config", url, cluster=cluster))
    async with KubernetesScaler(api, namespace=NAMESPACE) as scaler:
        with pytest.raises(ScaleError, match="cannot reach"):
            await scaler.current("email")


async def test_kubeconfig_file_paths_are_relative_to_the_kubeconfig(
    mtls_kube: TestServer, certs: Certs, tmp_path: Path
):
    folder = tmp_path / "kube"
    folder.mkdir()
    (folder / "ca.crt").write_bytes(certs.ca)
    (folder / "client.crt").write_bytes(certs.client.cert)
    (folder / "client.key").write_bytes(certs.client.key)
    (folder / "token").write_text(TOKEN)
    user = {"client-certificate": "client.crt", "client-key": "client.key", "tokenFile": "token"}
    path = kubeconfig(
        folder / "config",
        f"https://127.0.0.1:{mtls_kube.port}",
        user=user,
        cluster={"certificate-authority": "ca.crt"},
    )
    api = KubeApi.from_kubeconfig(path)
    assert api.token_file == folder / "token"
    async with KubernetesScaler(api, namespace=NAMESPACE) as scaler:
        assert await scaler.current("email") == 1


def test_kubeconfig_env_lists_files_and_the_first_one_wins(tmp_path: Path):
    first = kubeconfig(tmp_path / "a", "http://127.0.0.1:1", namespace="first")
    second = kubeconfig(tmp_path / "b", "http://127.0.0.1:2", namespace="second")
    env = {"KUBECONFIG": f"{tmp_path / 'missing'}:{first}:{second}"}
    api = KubeApi.from_kubeconfig(environ=env)
    assert (api.server, api.namespace) == ("http://127.0.0.1:1", "first")


def test_kubeconfig_defaults_to_home_kube_config(tmp_path: Path):
    kubeconfig(tmp_path / ".kube" / "config", "http://127.0.0.1:9", namespace=None)
    api = KubeApi.from_kubeconfig(environ={"HOME": str(tmp_path)})
    assert (api.server, api.namespace) == ("http://127.0.0.1:9", "default")


@pytest.mark.parametrize(
    ("user", "says"),
    [
        ({"exec": {"command": "aws"}}, "'exec', which taskq does not run"),
        ({"auth-provider": {"name": "gcp"}}, "'auth-provider'"),
        ({"username": "admin", "password": "x"}, "'username'"),
    ],
)
def test_kubeconfig_users_taskq_cannot_run_are_refused(tmp_path: Path, user: dict, says: str):
    path = kubeconfig(tmp_path / "config", "http://127.0.0.1:1", user=user)
    with pytest.raises(KubeConfigError, match=says):
        KubeApi.from_kubeconfig(path)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("clusters: [", "not valid YAML"),
        ("- a list", "not a kubeconfig"),
        ("clusters: []", "sets no current-context"),
        ("current-context: gone\ncontexts: []", "no context named 'gone'"),
    ],
)
def test_broken_kubeconfigs_are_named(tmp_path: Path, text: str, says: str):
    path = tmp_path / "config"
    path.write_text(text)
    with pytest.raises(KubeConfigError, match=says):
        KubeApi.from_kubeconfig(path)


def test_kubeconfig_bad_certificate_data_is_named(tmp_path: Path):
    cluster = {"certificate-authority-data": "%%%"}
    path = kubeconfig(tmp_path / "config", "https://127.0.0.1:1", cluster=cluster)
    with pytest.raises(KubeConfigError, match="certificate-authority-data is not base64"):
        KubeApi.from_kubeconfig(path)


def test_no_kubeconfig_anywhere_is_named(tmp_path: Path):
    with pytest.raises(KubeConfigError, match="KUBECONFIG is unset"):
        KubeApi.from_kubeconfig(environ={"HOME": str(tmp_path)})
    with pytest.raises(KubeConfigError, match="names no existing file"):
        KubeApi.from_kubeconfig(environ={"KUBECONFIG": str(tmp_path / "nope")})


# load: in-cluster first, then the kubeconfig --------------------------------------------------


def test_load_prefers_the_service_account_in_a_pod(tmp_path: Path, certs: Certs):
    root = service_account(tmp_path / "sa", ca=certs.ca)
    kubeconfig(tmp_path / ".kube" / "config", "http://127.0.0.1:9")
    env = {
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "HOME": str(tmp_path),
    }
    assert KubeApi.load(environ=env, account_dir=root).server == "https://10.96.0.1:443"


def test_load_falls_back_to_the_kubeconfig(tmp_path: Path):
    kubeconfig(tmp_path / ".kube" / "config", "http://127.0.0.1:9")
    api = KubeApi.load(environ={"HOME": str(tmp_path)}, account_dir=tmp_path / "sa")
    assert api.server == "http://127.0.0.1:9"


def test_load_without_either_gives_both_reasons(tmp_path: Path):
    with pytest.raises(KubeConfigError) as caught:
        KubeApi.load(environ={"HOME": str(tmp_path)}, account_dir=tmp_path / "sa")
    assert "KUBERNETES_SERVICE_HOST" in str(caught.value)
    assert "KUBECONFIG is unset" in str(caught.value)
