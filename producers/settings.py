"""Publisher settings read from ``TASKQ_*`` environment variables."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from topology.limits import MAX_DELAY_S, Tenant
from topology.names import DEFAULT_TENANT


class PublisherSettings(BaseModel):
    """How long to wait for a confirm, and how many publishes to keep in flight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    confirm_timeout: Annotated[float, Field(gt=0, le=300)] = 5.0
    publish_window: Annotated[int, Field(ge=1, le=65535)] = 512


class SubmitSettings(BaseModel):
    """Limits and lifetimes of job submission (HTTP API and Python clients alike)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    claim_check_bytes: Annotated[int, Field(ge=0)] = 256 * 1024
    max_delay: Annotated[float, Field(gt=0, le=MAX_DELAY_S)] = 30 * 86400.0
    idempotency_ttl: Annotated[float, Field(gt=0)] = 86400.0
    idempotency_lease: Annotated[float, Field(gt=0)] = 60.0
    batch_max: Annotated[int, Field(ge=1, le=10000)] = 500
    # A job stored but not confirmed this many seconds later (its submitter stopped in
    # between) is published again by the repair sweep; keep it under idempotency_lease.
    repair_after: Annotated[float, Field(gt=0)] = 30.0
    submit_events: bool = False
    store_url: str = "sqlite:///.taskq/jobs.sqlite3"
    blob_url: str = "file:.taskq/blobs"


class ApiSettings(BaseModel):
    """Where the HTTP API listens and what it accepts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    max_batch_body_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    retry_after: Annotated[int, Field(ge=1, le=3600)] = 5
    # WebSockets: browser pages of these origins (comma-separated; same-origin always) may
    # connect; frames a client sends are bounded, and a stream quiet this long is closed.
    ws_origins: str = ""
    ws_max_frame_bytes: Annotated[int, Field(ge=256, le=16 * 1024 * 1024)] = 64 * 1024
    ws_idle_timeout: Annotated[float, Field(gt=0, le=86400)] = 300.0

    @property
    def allowed_origins(self) -> frozenset[str]:
        """Return the origins (``https://console.example.com``) listed in ``ws_origins``."""
        return frozenset(o.strip().rstrip("/") for o in self.ws_origins.split(",") if o.strip())


class ClientSettings(BaseModel):
    """Whose jobs the Python clients (and the taskctl job commands) submit and see."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: Tenant = DEFAULT_TENANT
