"""The web console at ``/console``: overview, topology, webhooks, scaling, jobs and dead letters, behind the API's credentials."""

from __future__ import annotations

from functools import partial

from starlette.routing import Route

from producers.api.app import OwnDoor
from producers.auth.principal import Scope
from taskctl.autoscaler_status import status_url
from taskctl.console import dead_letters, jobs
from taskctl.console.login import log_in, log_out, login_form
from taskctl.console.overview import Overview, overview_events, overview_page, scaling_page, sources
from taskctl.console.sessions import PATH, Sessions
from taskctl.console.topology_graph import topology_page
from taskctl.console.web import Page, guarded, redirect, static
from topology.settings import AutoscalerSettings, BrokerSettings


def console_door(broker: BrokerSettings, autoscaler: AutoscalerSettings | None = None) -> OwnDoor:
    """Return the console's routes: every page needs a session, and each its scope."""
    sessions = Sessions()
    status = status_url(autoscaler or AutoscalerSettings())
    overview = Overview(broker)

    def page(path: str, scope: Scope | None, endpoint: Page, post: bool = False) -> Route:
        methods = ["POST"] if post else ["GET"]
        return Route(f"{PATH}{path}", guarded(sessions, scope, endpoint), methods=methods)

    admin, reader = Scope.ADMIN, Scope.JOBS_READ
    routes = [
        Route(PATH, lambda _: redirect(f"{PATH}/"), methods=["GET"]),
        Route(f"{PATH}/login", partial(login_form, sessions), methods=["GET"]),
        Route(f"{PATH}/login", partial(log_in, sessions), methods=["POST"]),
        Route(f"{PATH}/static/{{name}}", static, methods=["GET"]),
        page("/logout", None, partial(log_out, sessions), post=True),
        page("/", admin, partial(overview_page, overview, status)),
        page("/overview/events", admin, partial(overview_events, overview)),
        page("/topology", admin, partial(topology_page, broker)),
        page("/webhooks", admin, sources),
        page("/scaling", admin, partial(scaling_page, status)),
        page("/jobs", reader, jobs.search),
        page("/jobs/{job_id}", reader, jobs.job),
        page("/jobs/{job_id}/events", reader, jobs.events),
        page("/dlq", admin, dead_letters.groups),
        page("/dlq/{group}", admin, dead_letters.letters),
        page("/dlq/{group}/letters/{job_id}", admin, dead_letters.letter),
        page("/dlq/{group}/replay", admin, dead_letters.replay_letters, post=True),
        page("/dlq/{group}/purge", admin, dead_letters.purge_letters, post=True),
    ]
    return OwnDoor(PATH, routes)
