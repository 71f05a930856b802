"""Run the HTTP job API: ``python -m producers.api`` (``taskctl up`` starts it)."""

from __future__ import annotations

import uvicorn

from producers.api.app import create_app
from producers.api.assembly import build_services
from producers.api.guards import server_config
from producers.settings import ApiSettings
from topology.settings import load_settings


def main() -> None:
    """Serve the API on ``TASKQ_HOST``:``TASKQ_PORT`` until SIGINT or SIGTERM."""
    settings = load_settings(ApiSettings)
    uvicorn.Server(server_config(create_app(build_services, settings), settings)).run()


if __name__ == "__main__":
    main()
