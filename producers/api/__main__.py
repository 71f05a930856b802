"""Run the HTTP job API: ``python -m producers.api`` (``taskctl up`` starts it)."""

from __future__ import annotations

import uvicorn

from producers.api.app import create_app
from producers.api.assembly import build_services
from producers.settings import ApiSettings
from topology.settings import load_settings


def main() -> None:
    """Serve the API on ``TASKQ_HOST``:``TASKQ_PORT`` until SIGINT or SIGTERM."""
    settings = load_settings(ApiSettings)
    app = create_app(build_services, settings)
    # uvicorn drains in-flight requests on SIGTERM; keep-alive is short so drains are quick.
    # No access log: /metrics counts every request by route and status, and a log line per
    # request costs more than the request itself at high rates.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        timeout_keep_alive=5,
        log_level="info",
        access_log=False,
        ws_max_size=settings.ws_max_frame_bytes,
    )


if __name__ == "__main__":
    main()
