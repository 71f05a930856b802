"""An in-memory Kubernetes API serving the scale subresource of Deployments (GET and PATCH)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SCALE_PATH = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"
# The patch types the API server merges an object body with (a JSON patch is a list of operations).
MERGE_PATCHES = ("application/merge-patch+json", "application/strategic-merge-patch+json")


@dataclass
class FakeKube:
    """Keeps replicas in memory and checks what a real API server would refuse."""

    token: str = "test-token"
    replicas: dict[tuple[str, str], int] = field(default_factory=dict)  # (namespace, name)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    forbidden: set[str] = field(default_factory=set)  # namespaces the token may not touch (403)
    peers: set[Any] = field(default_factory=set)  # client addresses seen: one per connection
    answer: bytes | None = None  # when set, every request gets these bytes (a garbage answer)
    delay: float = 0.0  # seconds to stall before answering

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(SCALE_PATH, self._get)
        app.router.add_patch(SCALE_PATH, self._patch)
        return app

    async def _get(self, request: web.Request) -> web.Response:
        return await self._serve(request, None)

    async def _patch(self, request: web.Request) -> web.Response:
        if request.content_type not in MERGE_PATCHES:
            return _status(
                415, "UnsupportedMediaType", f"unsupported media type {request.content_type!r}"
            )
        body = await request.json()
        if not _merge_patch_of_replicas(body):
            return _status(422, "Invalid", f"expected {{'spec': {{'replicas': n}}}}, got {body!r}")
        return await self._serve(request, body["spec"]["replicas"])

    async def _serve(self, request: web.Request, replicas: int | None) -> web.Response:
        self.requests.append((request.method, request.path))
        if request.transport is not None:
            self.peers.add(request.transport.get_extra_info("peername"))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.answer is not None:
            return web.Response(body=self.answer, content_type="application/json")
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if namespace in self.forbidden:
            return _status(
                403,
                "Forbidden",
                f'cannot get resource "deployments/scale" in namespace "{namespace}"',
            )
        key = (namespace, name)
        if key not in self.replicas:
            return _status(404, "NotFound", f'deployments.apps "{name}" not found')
        if replicas is not None:
            self.replicas[key] = replicas
        return web.json_response(_scale(namespace, name, self.replicas[key]))


def _merge_patch_of_replicas(body: Any) -> bool:
    if not isinstance(body, dict) or set(body) != {"spec"}:
        return False
    spec = body["spec"]
    return (
        isinstance(spec, dict)
        and set(spec) == {"replicas"}
        and type(spec["replicas"]) is int
        and spec["replicas"] >= 0
    )


def _scale(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    spec = {"replicas": replicas} if replicas else {}  # the API server omits a zero
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
        "spec": spec,
        "status": {"replicas": replicas, "selector": f"app={name}"},
    }


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)
