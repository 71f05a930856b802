"""``python -m taskctl.serve``: the job API with the routes of the packages above it (``taskctl up`` runs it)."""

from __future__ import annotations

from collections.abc import Mapping

import uvicorn
from fastapi import FastAPI

from producers.api.app import Services, ServicesFactory, create_app
from producers.api.assembly import build_services
from producers.api.guards import server_config
from producers.settings import ApiSettings
from taskctl import admin_routes
from telemetry import tracing
from telemetry.logs import LogSettings, configure_logging
from topology.settings import load_settings
from webhooks.callbacks import registration_check
from webhooks.receiver import webhook_router


def assemble(
    settings: ApiSettings,
    services: Services | ServicesFactory | None = None,
    environ: Mapping[str, str] | None = None,
) -> FastAPI:
    """Return the whole API: jobs, ``/admin/dlq`` and ``/webhooks/{source}``, every door checked."""

    async def built() -> Services:
        made = await build_services(environ)
        made.submitter.callback_check = registration_check()
        return made

    if isinstance(services, Services):
        services.submitter.callback_check = registration_check()
    chosen = built if services is None else services
    return create_app(chosen, settings, routers=[admin_routes.router, webhook_router(environ)])


def main() -> None:
    """Serve the API plus ``/admin/dlq`` and ``/webhooks/{source}`` on ``TASKQ_HOST``:``TASKQ_PORT``."""
    configure_logging(load_settings(LogSettings))
    settings = load_settings(ApiSettings)
    tracing.configure_tracing("taskq-api")  # only when OTEL_* variables ask for it
    uvicorn.Server(server_config(assemble(settings), settings)).run()


if __name__ == "__main__":
    main()
