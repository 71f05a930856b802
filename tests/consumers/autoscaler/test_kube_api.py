import base64
import datetime
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from kubernetes_asyncio.config import incluster_config

from consumers.autoscaler.kubernetes import KubeApi, KubeConfigError, KubernetesScaler, ScaleError
from tests.consumers.autoscaler.certs import Certs
from tests.consumers.autoscaler.conftest import NAMESPACE, TOKEN, kubeconfig, server_url
from tests.consumers.autoscaler.kube_fake import FakeKube
from topology.errors import SettingsError

IN_A_POD = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def service_account(root: Path, *, token: str = TOKEN, ca: bytes | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "token").write_text(token)  # the kubelet writes the token without a newline
    (root / "namespace").write_text(NAMESPACE)
    if ca is not None:
        (root / "ca.crt").write_bytes(ca)
    return root


async def bearer(api: KubeApi) -> str | None:
    """Return the Authorization header the client would send next."""
    return await api.configuration.get_api_key_with_prefix("BearerToken")


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


async def test_in_cluster_reads_the_service_account(tmp_path: Path, certs: Certs):
    root = service_account(tmp_path / "sa", ca=certs.ca)
    api = await KubeApi.in_cluster(environ=IN_A_POD, account_dir=root)
    assert api.configuration.host == "https://10.96.0.1:443"
    assert api.namespace == NAMESPACE
    assert await bearer(api) == f"Bearer {TOKEN}"
    assert TOKEN not in repr(api)


async def test_in_cluster_brackets_an_ipv6_service_address(tmp_path: Path, certs: Certs):
    root = service_account(tmp_path / "sa", ca=certs.ca)
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    api = await KubeApi.in_cluster(environ=env, account_dir=root)
    assert api.configuration.host == "https://[fd00::1]:443"


async def test_outside_a_pod_in_cluster_says_so(tmp_path: Path):
    with pytest.raises(KubeConfigError, match="KUBERNETES_SERVICE_HOST") as caught:
        await KubeApi.in_cluster(environ={}, account_dir=tmp_path)
    assert isinstance(caught.value, SettingsError)


async def test_in_cluster_without_a_mounted_token_names_the_folder(tmp_path: Path):
    with pytest.raises(KubeConfigError, match="token file does not exist") as caught:
        await KubeApi.in_cluster(environ=IN_A_POD, account_dir=tmp_path)
    assert str(tmp_path) in str(caught.value)


async def test_in_cluster_with_a_bad_ca_says_so(tmp_path: Path):
    root = service_account(tmp_path / "sa", ca=b"not a certificate")
    with pytest.raises(KubeConfigError, match="in a pod") as caught:
        await KubeApi.in_cluster(environ=IN_A_POD, account_dir=root)
    assert isinstance(caught.value.__cause__, ssl.SSLError)


async def test_in_cluster_scales_over_tls_and_follows_a_rotated_token(
    tls_kube: TestServer,
    certs: Certs,
    tmp_path: Path,
    fake: FakeKube,
    monkeypatch: pytest.MonkeyPatch,
):
    # The client rereads the token file once its last read is a minute old; make that now.
    monkeypatch.setattr(incluster_config, "TOKEN_REFRESH_PERIOD", datetime.timedelta(0))
    root = service_account(tmp_path / "sa", ca=certs.ca)
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(tls_kube.port)}
    api = await KubeApi.in_cluster(environ=env, account_dir=root)
    async with KubernetesScaler(api) as scaler:
        await scaler.scale("email", 4)
        assert await scaler.current("email") == 4
        fake.token = "rotated"
        (root / "token").write_text("rotated")
        await scaler.scale("email", 5)
    assert fake.replicas[(NAMESPACE, "taskq-worker-email")] == 5


async def test_a_server_outside_the_ca_is_a_scale_error(tls_kube: TestServer, tmp_path: Path):
    # No certificate-authority: the system's trust store, which does not know the test CA.
    path = kubeconfig(tmp_path / "config", f"https://127.0.0.1:{tls_kube.port}")
    async with KubernetesScaler(await KubeApi.from_kubeconfig(path)) as scaler:
        with pytest.raises(ScaleError, match="cannot reach"):
            await scaler.current("email")


# kubeconfig ---------------------------------------------------------------------------------


async def test_kubeconfig_with_a_token_scales_the_test_server(
    kube: TestServer, tmp_path: Path, fake: FakeKube
):
    api = await KubeApi.from_kubeconfig(kubeconfig(tmp_path / "config", server_url(kube)))
    assert (api.configuration.host, api.namespace) == (server_url(kube), NAMESPACE)
    async with KubernetesScaler(api) as scaler:
        await scaler.scale("email", 7)
        assert await scaler.current("email") == 7


async def test_kubeconfig_client_certificate_data_over_mutual_tls(
    mtls_kube: TestServer, certs: Certs, tmp_path: Path
):
    url = f"https://127.0.0.1:{mtls_kube.port}"
    user = {
        "client-certificate-data": b64(certs.client.cert),
        "client-key-data": b64(certs.client.key),
        "token": TOKEN,
    }
    cluster = {"certificate-authority-data": b64(certs.ca)}
    path = kubeconfig(tmp_path / "config", url, user=user, cluster=cluster)
    async with KubernetesScaler(await KubeApi.from_kubeconfig(path)) as scaler:
        assert await scaler.current("email") == 1


async def test_kubeconfig_without_the_client_certificate_fails_mutual_tls(
    mtls_kube: TestServer, certs: Certs, tmp_path: Path
):
    url = f"https://127.0.0.1:{mtls_kube.port}"
    cluster = {"certificate-authority-data": b64(certs.ca)}
    path = kubeconfig(tmp_path / "config", url, cluster=cluster)
    async with KubernetesScaler(await KubeApi.from_kubeconfig(path)) as scaler:
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
    async with KubernetesScaler(await KubeApi.from_kubeconfig(path)) as scaler:
        assert await scaler.current("email") == 1


async def test_kubeconfig_exec_plugin_is_rerun_once_its_token_expired(
    kube: TestServer, tmp_path: Path, fake: FakeKube
):
    # The plugin prints the token in a file, already expired: each request runs it again.
    (tmp_path / "token").write_text(TOKEN)
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, pathlib\n"
        "token = pathlib.Path(__file__).with_name('token').read_text()\n"
        "status = {'token': token, 'expirationTimestamp': '2000-01-01T00:00:00Z'}\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1',\n"
        "                  'kind': 'ExecCredential', 'status': status}))\n"
    )
    exec_ = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": sys.executable,
        "args": [str(plugin)],
    }
    path = kubeconfig(tmp_path / "config", server_url(kube), user={"exec": exec_})
    async with KubernetesScaler(await KubeApi.from_kubeconfig(path)) as scaler:
        assert await scaler.current("email") == 1
        fake.token = "renewed"
        (tmp_path / "token").write_text("renewed")
        await scaler.scale("email", 2)
    assert fake.replicas[(NAMESPACE, "taskq-worker-email")] == 2


async def test_kubeconfig_env_lists_files_and_the_first_one_wins(tmp_path: Path):
    first = kubeconfig(tmp_path / "a", "http://127.0.0.1:1", namespace="first")
    second = kubeconfig(tmp_path / "b", "http://127.0.0.1:2", namespace="second")
    env = {"KUBECONFIG": f"{tmp_path / 'missing'}:{first}:{second}"}
    api = await KubeApi.from_kubeconfig(environ=env)
    assert (api.configuration.host, api.namespace) == ("http://127.0.0.1:1", "first")


async def test_kubeconfig_defaults_to_home_kube_config(tmp_path: Path):
    kubeconfig(tmp_path / ".kube" / "config", "http://127.0.0.1:9", namespace=None)
    api = await KubeApi.from_kubeconfig(environ={"HOME": str(tmp_path)})
    assert (api.configuration.host, api.namespace) == ("http://127.0.0.1:9", "default")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("clusters: [", "while parsing"),
        ("- a list", "not a valid kubeconfig"),
        ("clusters: []", "Expected key current-context"),
        ("current-context: gone\ncontexts: []", "Expected object with name gone"),
    ],
)
async def test_broken_kubeconfigs_are_named(tmp_path: Path, text: str, says: str):
    path = tmp_path / "config"
    path.write_text(text)
    with pytest.raises(KubeConfigError, match=says) as caught:
        await KubeApi.from_kubeconfig(path)
    assert str(caught.value).startswith(f"kubeconfig {path}")


async def test_kubeconfig_bad_certificate_data_is_named(tmp_path: Path):
    cluster = {"certificate-authority-data": b64(b"not a certificate")}
    path = kubeconfig(tmp_path / "config", "https://127.0.0.1:1", cluster=cluster)
    with pytest.raises(KubeConfigError, match=f"kubeconfig {path}"):
        await KubeApi.from_kubeconfig(path)


async def test_no_kubeconfig_anywhere_is_named(tmp_path: Path):
    with pytest.raises(KubeConfigError, match="KUBECONFIG is unset"):
        await KubeApi.from_kubeconfig(environ={"HOME": str(tmp_path)})
    with pytest.raises(KubeConfigError, match="names no existing file"):
        await KubeApi.from_kubeconfig(environ={"KUBECONFIG": str(tmp_path / "nope")})


# load: in-cluster first, then the kubeconfig --------------------------------------------------


async def test_load_prefers_the_service_account_in_a_pod(tmp_path: Path, certs: Certs):
    root = service_account(tmp_path / "sa", ca=certs.ca)
    kubeconfig(tmp_path / ".kube" / "config", "http://127.0.0.1:9")
    api = await KubeApi.load(environ=IN_A_POD | {"HOME": str(tmp_path)}, account_dir=root)
    assert api.configuration.host == "https://10.96.0.1:443"


async def test_load_falls_back_to_the_kubeconfig(tmp_path: Path):
    kubeconfig(tmp_path / ".kube" / "config", "http://127.0.0.1:9")
    api = await KubeApi.load(environ={"HOME": str(tmp_path)}, account_dir=tmp_path / "sa")
    assert api.configuration.host == "http://127.0.0.1:9"


async def test_load_without_either_gives_both_reasons(tmp_path: Path):
    with pytest.raises(KubeConfigError) as caught:
        await KubeApi.load(environ={"HOME": str(tmp_path)}, account_dir=tmp_path / "sa")
    assert "KUBERNETES_SERVICE_HOST" in str(caught.value)
    assert "KUBECONFIG is unset" in str(caught.value)
