"""The webhook sources page: each source's latest deliveries, refusals with their reasons, duplicates."""

from __future__ import annotations

from starlette.responses import Response

from taskctl.console.web import Visit
from webhooks.receiver import delivery_log

ACCEPTED = frozenset({"accepted", "replayed"})  # replayed: a duplicate delivery, no second job


async def sources(visit: Visit) -> Response:
    """Show every source of the topology with what this process received from it."""
    log = delivery_log(visit.request.app)
    shown = [
        {
            "name": name,
            "scheme": spec.scheme,
            "counts": log.counts(name),
            "latest": log.latest(name),
        }
        for name, spec in visit.services.submitter.topology.webhooks
    ]
    return visit.page("webhooks.html", sources=shown, accepted=ACCEPTED)
