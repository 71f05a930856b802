"""The breakers and scaling page: each worker's open breakers, and what the autoscaler last decided."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from starlette.responses import Response

from taskctl.console.web import Visit
from topology.settings import AutoscalerSettings

TIMEOUT_S = 3.0


class ScalingPage:
    """Breakers from the job store; scaling from the autoscaler's ``/status``, asked as the session."""

    def __init__(self, autoscaler: AutoscalerSettings) -> None:
        host = autoscaler.autoscaler_host
        host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # listening everywhere
        self._url = f"http://{host}:{autoscaler.autoscaler_port}/status"

    async def page(self, visit: Visit) -> Response:
        """Show every recorded breaker (open first) and every group's last scaling decision."""
        breakers = await visit.services.submitter.store.list_breakers()
        breakers.sort(key=lambda b: (b.state == "closed", b.group, b.dependency, b.worker))
        groups, problem = await self._status(visit.session.credential)
        return visit.page("scaling.html", breakers=breakers, groups=groups, problem=problem)

    async def _status(self, credential: str) -> tuple[list[dict[str, Any]], str | None]:
        """Return the autoscaler's groups, or why they cannot be had."""
        headers = {"Authorization": f"Bearer {credential}"}
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(self._url, headers=headers) as answer,
            ):
                body = await answer.read()
                if answer.status != 200:
                    return [], f"the autoscaler at {self._url} refused: {answer.status}"
            groups = orjson.loads(body)["groups"]
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            why = str(exc) or type(exc).__name__
            return (
                [],
                f"no autoscaler answers at {self._url} ({why}): is taskctl up or autoscale running?",
            )
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return [], f"the autoscaler at {self._url} answered something else than its status"
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            return [], f"the autoscaler at {self._url} answered something else than its status"
        return groups, None
