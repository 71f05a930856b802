"""The breakers and scaling page: each worker's breakers and their transitions, the autoscaler's decisions and changes."""

from __future__ import annotations

from starlette.responses import Response

from taskctl.autoscaler_status import read_status
from taskctl.console.web import Visit

CHANGES = 50  # breaker transitions shown, the latest


async def scaling_page(status_url: str, visit: Visit) -> Response:
    """Show every recorded breaker (open first), the latest transitions, and the autoscaler's decisions and changes."""
    store = visit.services.submitter.store
    breakers = await store.list_breakers()
    breakers.sort(key=lambda b: (b.state == "closed", b.group, b.dependency, b.worker))
    changes = await store.list_breaker_changes(limit=CHANGES)
    status = await read_status(status_url, visit.session.credential)
    return visit.page("scaling.html", breakers=breakers, changes=changes, scaling=status)
