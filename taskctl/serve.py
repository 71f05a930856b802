"""``python -m taskctl.serve``: the job API with the routes of the packages above it (``taskctl up`` runs it)."""

from __future__ import annotations

import uvicorn

from producers.api.app import Services, create_app
from producers.api.assembly import build_services
from producers.settings import ApiSettings
from taskctl import admin_routes
from telemetry import tracing
from telemetry.logs import LogSettings, configure_logging
from topology.settings import load_settings
from webhooks.callbacks import registration_check
from webhooks.receiver import webhook_router


def main() -> None:
    """Serve the API plus ``/admin/dlq`` and ``/webhooks/{source}`` on ``TASKQ_HOST``:``TASKQ_PORT``."""
    configure_logging(load_settings(LogSettings))
    settings = load_settings(ApiSettings)
    tracing.configure_tracing("taskq-api")  # only when OTEL_* variables ask for it

    async def services() -> Services:
        built = await build_services()
        built.submitter.callback_check = registration_check()
        return built

    app = create_app(services, settings, routers=[admin_routes.router, webhook_router()])
    # No access log: /metrics counts every request by route and status. No log config either:
    # uvicorn's loggers propagate to the root, whose one handler passes them on to loguru.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        timeout_keep_alive=5,
        access_log=False,
        log_config=None,
    )


if __name__ == "__main__":
    main()
