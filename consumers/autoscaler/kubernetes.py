"""The Kubernetes actuator: the API and its credentials, and each group's (or stream source's) Deployment scale as its workers (or readers)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import yaml

from consumers.autoscaler.signals import stream_target
from topology import names
from topology.closing import AsyncClosing
from topology.errors import SettingsError, TaskqError

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient, Configuration

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeConfigError(SettingsError):
    """No usable Kubernetes API credentials: the message names the file or variable to fix."""


@dataclass(frozen=True, slots=True)
class KubeApi:
    """The client configuration of one Kubernetes API and the namespace it defaults to."""

    configuration: Configuration
    namespace: str = "default"  # the namespace of the pod, or of the kubeconfig's context

    @classmethod
    async def in_cluster(
        cls, *, environ: Mapping[str, str] | None = None, account_dir: Path = SERVICE_ACCOUNT_DIR
    ) -> KubeApi:
        """Return the API of the cluster this pod runs in, as its service account (token reread each minute)."""
        from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader

        where = f"in a pod ($KUBERNETES_SERVICE_HOST, $KUBERNETES_SERVICE_PORT, {account_dir})"
        async with _loaded(where) as configuration:
            loader = InClusterConfigLoader(
                str(account_dir / "token"),
                str(account_dir / "ca.crt"),
                environ=dict(os.environ if environ is None else environ),
            )
            loader.load_and_set(configuration)
            namespace_file = account_dir / "namespace"
            namespace = namespace_file.read_text().strip() if namespace_file.is_file() else ""
        return cls(configuration, namespace or "default")

    @classmethod
    async def from_kubeconfig(
        cls, path: Path | None = None, *, environ: Mapping[str, str] | None = None
    ) -> KubeApi:
        """Return the API of the kubeconfig's current context: ``path``, else ``$KUBECONFIG``, else ``~/.kube/config``."""
        from kubernetes_asyncio.config import load_kube_config

        files = _kubeconfig_files(path, os.environ if environ is None else environ)
        async with _loaded(f"kubeconfig {files}") as configuration:
            loader = await load_kube_config(
                files, client_configuration=configuration, persist_config=False
            )
            context = (loader.current_context or {}).get("context") or {}
            # The loader ran the exec plugin once; its token expires, so rerun it when it has.
            if loader._user is not None and "exec" in loader._user:

                async def refresh(config: Configuration) -> None:
                    await loader.load_from_exec_plugin()
                    config.api_key["BearerToken"] = loader.token

                configuration.refresh_api_key_hook = refresh
        return cls(configuration, str(context.get("namespace") or "default"))

    @classmethod
    async def load(
        cls,
        *,
        environ: Mapping[str, str] | None = None,
        account_dir: Path = SERVICE_ACCOUNT_DIR,
    ) -> KubeApi:
        """Return the in-cluster API when this runs in a pod, else the kubeconfig's current context."""
        try:
            return await cls.in_cluster(environ=environ, account_dir=account_dir)
        except KubeConfigError as in_cluster:
            try:
                return await cls.from_kubeconfig(environ=environ)
            except KubeConfigError as from_file:
                raise KubeConfigError(
                    f"no Kubernetes API credentials: {in_cluster}; and {from_file}"
                ) from from_file


def _kubeconfig_files(path: Path | None, env: Mapping[str, str]) -> str:
    """Return ``path``, else ``$KUBECONFIG``, else ``~/.kube/config``, when one of its files exists."""
    files = str(path) if path else env.get("KUBECONFIG", "")
    if not files:
        home = Path(env["HOME"]) if env.get("HOME") else Path.home()
        files = str(home / ".kube" / "config")
    # kubectl merges every file of $KUBECONFIG that exists; when none does, say which to fix.
    if not any(Path(p).expanduser().is_file() for p in files.split(os.pathsep) if p):
        raise KubeConfigError(
            f"no kubeconfig at {files}"
            if path
            else f"KUBECONFIG={files} names no existing file"
            if env.get("KUBECONFIG")
            else f"no kubeconfig: KUBECONFIG is unset and {files} does not exist"
        )
    return files


@asynccontextmanager
async def _loaded(where: str) -> AsyncIterator[Configuration]:
    """Yield a configuration to load, then build its client once so a bad CA or certificate fails here; raise a KubeConfigError naming ``where``."""
    from kubernetes_asyncio.client import ApiClient, Configuration
    from kubernetes_asyncio.config import ConfigException

    configuration = Configuration()
    try:
        yield configuration
        await ApiClient(configuration).close()
    except (ConfigException, OSError, yaml.YAMLError, ValueError) as exc:  # OSError: ssl's too
        raise KubeConfigError(f"{where}: {exc}") from exc
    except (TypeError, AttributeError, KeyError) as exc:
        # The loader indexes the YAML as it finds it: a wrong shape surfaces as one of these.
        raise KubeConfigError(f"{where} is not a valid kubeconfig: {exc!r}") from exc


def target_deployment(target: str) -> str:
    """Return the Deployment of an autoscaler target: ``taskq-worker-<group>``, or ``taskq-stream-<source>`` for ``stream:<source>``."""
    source = target.removeprefix(stream_target(""))
    return names.stream_deployment(source) if source != target else names.worker_deployment(target)


class ScaleError(TaskqError):
    """The Kubernetes API could not be reached, refused a scale request, or answered garbage."""

    status: int | None = None


class KubernetesScaler(AsyncClosing):
    """Reads and sets the replicas of each group's and stream source's Deployment through one reused API client."""

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str | None = None,
        deployment: Callable[[str], str] = target_deployment,
        timeout: float = 10.0,
    ) -> None:
        self._api = api
        self._namespace = namespace or api.namespace
        self._deployment = deployment
        self._timeout = timeout
        self._client: ApiClient | None = None

    async def current(self, group: str) -> int:
        """Return the replicas the Deployment of ``group`` (or ``stream:<source>``) asks for (``spec.replicas``)."""
        return await self._call("GET", group, None)

    async def scale(self, group: str, workers: int) -> None:
        """Set the replicas of the Deployment of ``group`` (or ``stream:<source>``) to ``workers``."""
        await self._call("PATCH", group, {"spec": {"replicas": workers}})

    async def close(self) -> None:
        """Close the API client; a later call opens a new one."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _call(self, method: str, group: str, patch: dict[str, Any] | None) -> int:
        from kubernetes_asyncio.client import ApiClient, ApiException, AppsV1Api

        if self._client is None:
            self._client = ApiClient(self._api.configuration)
            self._client.user_agent = "taskq-autoscaler"
        apps = AppsV1Api(self._client)
        name = self._deployment(group)
        where = f"deployment {name!r} in namespace {self._namespace!r}"
        request: Awaitable[Any] = (
            apps.read_namespaced_deployment_scale(
                name, self._namespace, _request_timeout=self._timeout
            )
            if patch is None
            else apps.patch_namespaced_deployment_scale(
                name, self._namespace, patch, _request_timeout=self._timeout
            )
        )
        try:
            return _replicas(await request, where)
        except ApiException as exc:
            raise ScaleError(
                _refusal(exc.status, method, where, exc.body), status=exc.status
            ) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:  # before ValueError: TLS errors are both
            raise ScaleError(
                f"{method} the scale of {where}: cannot reach the Kubernetes API at "
                f"{self._api.configuration.host}: {exc or type(exc).__name__}"
            ) from exc
        except (ValueError, TypeError) as exc:
            # The client turns the answer into a V1Scale and refuses fields of the wrong type.
            raise ScaleError(f"the scale of {where} is not an autoscaling/v1 Scale: {exc}") from exc


def _replicas(scale: Any, where: str) -> int:
    """Return ``spec.replicas`` of an ``autoscaling/v1`` Scale."""
    spec = getattr(scale, "spec", None)
    if spec is None or getattr(scale, "kind", None) not in (None, "Scale"):
        raise ScaleError(f"the scale of {where} is not an autoscaling/v1 Scale: {str(scale)[:200]}")
    # The API server leaves out a zero (the field is `omitempty`), so a missing count is 0.
    replicas = spec.replicas or 0
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise ScaleError(f"the scale of {where} has spec.replicas {replicas!r}, not a count")
    return replicas


# What a refusal means and how to fix it, by HTTP status.
_REFUSALS = {
    401: "the Kubernetes API refused the credentials to {verb} the scale of {where} (HTTP 401): "
    "the token is missing, wrong or expired.",
    403: "forbidden to {verb} the scale of {where} (HTTP 403): grant the service account a Role "
    "with verbs get and patch on deployments/scale (API group apps).",
    404: "{where} not found (HTTP 404): create it, or fix the namespace or the Deployment naming.",
}


def _refusal(status: int, method: str, where: str, body: bytes | str | None) -> str:
    """Say what the refusal means and how to fix it, then the API's message (or the body's start)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body or ""
    try:
        detail = json.loads(text)["message"]  # a Kubernetes ``Status``
    except (ValueError, TypeError, KeyError):
        detail = None
    verb = "read" if method == "GET" else "patch"
    refusal = _REFUSALS.get(status, "cannot {verb} the scale of {where}: HTTP {status}.")
    shown = detail if isinstance(detail, str) else text[:200]
    return f"{refusal.format(verb=verb, where=where, status=status)} {shown}"
