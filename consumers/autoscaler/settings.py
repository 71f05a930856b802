"""Autoscaler settings read from ``TASKQ_*`` environment variables."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class AutoscalerSettings(BaseModel):
    """How often the autoscaler polls, and where it serves its status and metrics."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    autoscale: bool = True  # taskctl up scales workers; false: each group runs its min (at least 1)
    autoscale_interval: Annotated[float, Field(gt=0, le=3600)] = 5.0
    autoscaler_host: str = "127.0.0.1"
    autoscaler_port: Annotated[int, Field(ge=0, le=65535)] = 9464
