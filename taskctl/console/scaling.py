"""The breakers and scaling page: each worker's breakers and their transitions, the autoscaler's decisions and changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from starlette.responses import Response

from taskctl.console.web import Visit
from topology.settings import AutoscalerSettings

TIMEOUT_S = 3.0
CHANGES = 50  # breaker transitions shown, the latest


@dataclass(frozen=True, slots=True)
class ScalingStatus:
    """What the autoscaler's ``/status`` said: each group's last decision, its latest changes, or why not."""

    groups: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)  # newest first
    problem: str | None = None

    def by_group(self) -> dict[str, dict[str, Any]]:
        """Return each group's last decision by the group's name."""
        return {str(g.get("group")): g for g in self.groups}


class AutoscalerStatus:
    """Asks the autoscaler's ``/status`` with a session's credential (it wants ``admin``)."""

    def __init__(self, autoscaler: AutoscalerSettings) -> None:
        host = autoscaler.autoscaler_host
        host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # listening everywhere
        self.url = f"http://{host}:{autoscaler.autoscaler_port}/status"

    async def read(self, credential: str) -> ScalingStatus:
        """Return the autoscaler's status, or why it cannot be had."""
        headers = {"Authorization": f"Bearer {credential}"}
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        other = f"the autoscaler at {self.url} answered something else than its status"
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(self.url, headers=headers) as answer,
            ):
                body = await answer.read()
                if answer.status != 200:
                    return ScalingStatus(
                        problem=f"the autoscaler at {self.url} refused: {answer.status}"
                    )
            status = orjson.loads(body)
            groups, history = status["groups"], status.get("history", [])
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            why = str(exc) or type(exc).__name__
            return ScalingStatus(
                problem=f"no autoscaler answers at {self.url} ({why}): is taskctl up or autoscale running?"
            )
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return ScalingStatus(problem=other)
        if not all(
            isinstance(v, list) and all(isinstance(i, dict) for i in v) for v in (groups, history)
        ):
            return ScalingStatus(problem=other)
        return ScalingStatus(groups, history)


async def scaling_page(autoscaler: AutoscalerStatus, visit: Visit) -> Response:
    """Show every recorded breaker (open first), the latest transitions, and the autoscaler's decisions and changes."""
    store = visit.services.submitter.store
    breakers = await store.list_breakers()
    breakers.sort(key=lambda b: (b.state == "closed", b.group, b.dependency, b.worker))
    changes = await store.list_breaker_changes(limit=CHANGES)
    status = await autoscaler.read(visit.session.credential)
    return visit.page("scaling.html", breakers=breakers, changes=changes, scaling=status)
