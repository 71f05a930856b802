"""The autoscaler's ``/status`` as the console and ``taskctl scale`` read it: each group's last decision, the latest changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from topology.settings import AutoscalerSettings

TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class ScalingStatus:
    """What the autoscaler's ``/status`` said: each group's last decision, its latest changes, or why not."""

    groups: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)  # newest first
    problem: str | None = None

    def by_group(self) -> dict[str, dict[str, Any]]:
        """Return each group's last decision by the group's name."""
        return {str(g.get("group")): g for g in self.groups}


def status_url(autoscaler: AutoscalerSettings) -> str:
    """Return the URL of the ``/status`` the autoscaler of these settings serves."""
    host = autoscaler.autoscaler_host
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # listening everywhere
    return f"http://{host}:{autoscaler.autoscaler_port}/status"


async def read_status(url: str, credential: str | None) -> ScalingStatus:
    """Return the status the autoscaler at ``url`` gives ``credential`` (it wants ``admin``), or why it cannot be had."""
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    other = f"the autoscaler at {url} answered something else than its status"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as http,
            http.get(url, headers=headers) as answer,
        ):
            body = await answer.read()
        if answer.status != 200:
            try:  # the problem detail of the refusal, else its reason
                detail = str(orjson.loads(body)["detail"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                detail = answer.reason or ""
            return ScalingStatus(
                problem=f"the autoscaler at {url} refused: {answer.status} {detail}"
            )
        status = orjson.loads(body)
        groups, history = status["groups"], status.get("history", [])
    except (OSError, TimeoutError, aiohttp.ClientError) as exc:
        why = str(exc) or type(exc).__name__
        return ScalingStatus(
            problem=f"no autoscaler answers at {url} ({why}): is taskctl up or autoscale running?"
        )
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ScalingStatus(problem=other)
    if not all(
        isinstance(v, list) and all(isinstance(i, dict) for i in v) for v in (groups, history)
    ):
        return ScalingStatus(problem=other)
    return ScalingStatus(groups, history)
