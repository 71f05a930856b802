"""Worker settings read from ``TASKQ_*`` environment variables."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class WorkerSettings(BaseModel):
    """How a worker drains, how long it remembers done work, and when a job counts as poison."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    grace: Annotated[float, Field(gt=0, le=3600)] = 30.0
    poison_deliveries: Annotated[int, Field(ge=1, le=1000)] = 5
    breaker_threshold: Annotated[int, Field(ge=1, le=10000)] = 5
    breaker_cooldown: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # A run shorter than this announces only its outcome: the running event would be stale
    # before anyone could act on it, and it costs a publish on every job's hot path.
    running_event_delay: Annotated[float, Field(ge=0, le=60)] = 0.1
    # The shipped example handler, and the built-in delivery of job callbacks.
    # Serve this worker's /metrics on this port (0: not served; under taskctl up the API
    # serves every local process's metrics instead).
    worker_metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    handlers: str = "consumers.examples,webhooks.callbacks"
