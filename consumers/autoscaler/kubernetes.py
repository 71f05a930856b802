"""The Kubernetes actuator: a group's worker count is its Deployment's scale subresource."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from consumers.autoscaler.kube_api import KubeApi
from topology import names
from topology.closing import AsyncClosing
from topology.errors import TaskqError

MERGE_PATCH = "application/merge-patch+json"


class ScaleError(TaskqError):
    """The Kubernetes API could not be reached, refused a scale request, or answered garbage."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class KubernetesScaler(AsyncClosing):
    """Reads and sets the replicas of each group's Deployment through one reused HTTP session."""

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str,
        deployment: Callable[[str], str] = names.worker_deployment,
        timeout: float = 10.0,
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._deployment = deployment
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def current(self, group: str) -> int:
        """Return the replicas the Deployment of ``group`` asks for (``spec.replicas``)."""
        return _replicas(await self._request("GET", group), self._where(group))

    async def scale(self, group: str, workers: int) -> None:
        """Set the replicas of the Deployment of ``group`` to ``workers``."""
        if workers < 0:
            raise ValueError(f"workers must be 0 or more, not {workers}")
        body = orjson.dumps({"spec": {"replicas": workers}})
        _replicas(await self._request("PATCH", group, body), self._where(group))

    async def close(self) -> None:
        """Close the HTTP session; a later call opens a new one."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _where(self, group: str) -> str:
        return f"deployment {self._deployment(group)!r} in namespace {self._namespace!r}"

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            tls = self._api.ssl_context if self._api.ssl_context is not None else True
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls),
                timeout=self._timeout,
                headers={"Accept": "application/json", "User-Agent": "taskq-autoscaler"},
            )
        return self._session

    async def _request(self, method: str, group: str, body: bytes | None = None) -> Any:
        name = self._deployment(group)
        url = (
            f"{self._api.server}/apis/apps/v1/namespaces/{quote(self._namespace, safe='')}"
            f"/deployments/{quote(name, safe='')}/scale"
        )
        headers = {"Content-Type": MERGE_PATCH} if body is not None else {}
        # The token file may have rotated since the last request.
        if auth := self._api.authorization():
            headers["Authorization"] = auth
        try:
            async with self._open().request(method, url, data=body, headers=headers) as response:
                payload = await response.read()
                if response.status >= 400:
                    raise ScaleError(
                        _refusal(response.status, method, self._where(group), _detail(payload)),
                        status=response.status,
                    )
                return orjson.loads(payload)
        except ScaleError:
            raise
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ScaleError(
                f"{method} the scale of {self._where(group)}: cannot reach the Kubernetes API "
                f"at {self._api.server}: {exc or type(exc).__name__}"
            ) from exc
        except orjson.JSONDecodeError as exc:
            raise ScaleError(
                f"{method} the scale of {self._where(group)}: the Kubernetes API at "
                f"{self._api.server} answered something that is not JSON"
            ) from exc


def _replicas(scale: Any, where: str) -> int:
    """Return ``spec.replicas`` of an ``autoscaling/v1`` Scale."""
    spec = scale.get("spec") if isinstance(scale, dict) else None
    if not isinstance(spec, dict) or scale.get("kind", "Scale") != "Scale":
        raise ScaleError(f"the scale of {where} is not an autoscaling/v1 Scale: {str(scale)[:200]}")
    # The API server leaves out a zero (the field is `omitempty`), so a missing count is 0.
    replicas = spec.get("replicas", 0)
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


def _detail(payload: bytes) -> str:
    """Return the message of a Kubernetes ``Status`` body, or the start of any other body."""
    try:
        status = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload[:200].decode("utf-8", "replace")
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return str(status["message"])
    return payload[:200].decode("utf-8", "replace")
