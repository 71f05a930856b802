"""The Kubernetes actuator: a group's worker count is its Deployment's scale subresource."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from consumers.autoscaler.kube_api import KubeApi
from topology import names
from topology.closing import AsyncClosing
from topology.errors import TaskqError

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient


class ScaleError(TaskqError):
    """The Kubernetes API could not be reached, refused a scale request, or answered garbage."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class KubernetesScaler(AsyncClosing):
    """Reads and sets the replicas of each group's Deployment through one reused API client."""

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str | None = None,
        deployment: Callable[[str], str] = names.worker_deployment,
        timeout: float = 10.0,
    ) -> None:
        self._api = api
        self._namespace = namespace or api.namespace
        self._deployment = deployment
        self._timeout = timeout
        self._client: ApiClient | None = None

    async def current(self, group: str) -> int:
        """Return the replicas the Deployment of ``group`` asks for (``spec.replicas``)."""
        return await self._call("GET", group, None)

    async def scale(self, group: str, workers: int) -> None:
        """Set the replicas of the Deployment of ``group`` to ``workers``."""
        if workers < 0:
            raise ValueError(f"workers must be 0 or more, not {workers}")
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
        name, where = self._deployment(group), self._where(group)
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
                _refusal(exc.status, method, where, _detail(exc.body)), status=exc.status
            ) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:  # before ValueError: TLS errors are both
            raise ScaleError(
                f"{method} the scale of {where}: cannot reach the Kubernetes API at "
                f"{self._api.configuration.host}: {exc or type(exc).__name__}"
            ) from exc
        except (ValueError, TypeError) as exc:
            # The client turns the answer into a V1Scale and refuses fields of the wrong type.
            raise ScaleError(f"the scale of {where} is not an autoscaling/v1 Scale: {exc}") from exc

    def _where(self, group: str) -> str:
        return f"deployment {self._deployment(group)!r} in namespace {self._namespace!r}"


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


def _refusal(status: int, method: str, where: str, detail: str) -> str:
    verb = "read" if method == "GET" else "patch"
    if status == 401:
        return (
            f"the Kubernetes API refused the credentials to {verb} the scale of {where} "
            f"(HTTP 401): the token is missing, wrong or expired. {detail}"
        )
    if status == 403:
        return (
            f"forbidden to {verb} the scale of {where} (HTTP 403): grant the service account a "
            f"Role with verbs get and patch on deployments/scale (API group apps). {detail}"
        )
    if status == 404:
        return (
            f"{where} not found (HTTP 404): create it, or fix the namespace or the "
            f"Deployment naming. {detail}"
        )
    return f"cannot {verb} the scale of {where}: HTTP {status}. {detail}"


def _detail(payload: bytes | str | None) -> str:
    """Return the message of a Kubernetes ``Status`` body, or the start of any other body."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload or ""
    try:
        status = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return str(status["message"])
    return text[:200]
