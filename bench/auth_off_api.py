"""The baseline of the auth-on column of bench/http_ingest.py: the job API with its gate taken out.

The jobs API ``taskctl serve`` serves, minus the one ASGI layer that verifies
credentials and takes a token from the rate bucket; every request runs as one fixed,
all-scopes principal handed in through the lifespan state (so no layer is added in its
place). A measuring instrument only: never serve it.
Run: python bench/auth_off_api.py (the TASKQ_* settings of taskctl serve)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from producers.api.app import create_app
from producers.api.security import AuthGate
from producers.auth.principal import Principal, Scope
from producers.tenancy import Viewer
from taskctl.assembly import api_services
from topology.settings import ApiSettings, load_settings

EVERYONE = Principal("bench", frozenset(Scope), Viewer())


def build(settings: ApiSettings) -> FastAPI:
    app = create_app(lambda: api_services(load_settings()), settings)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not AuthGate]
    served = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with served(app):
            yield {"principal": EVERYONE}  # uvicorn copies it into every request's state

    app.router.lifespan_context = lifespan
    return app


if __name__ == "__main__":
    settings = load_settings().api
    uvicorn.run(
        build(settings),
        host=settings.host,
        port=settings.port,
        timeout_keep_alive=5,
        log_level="warning",
        access_log=False,
    )
