"""Publisher settings read from ``TASKQ_*`` environment variables."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class PublisherSettings(BaseModel):
    """How long to wait for a confirm, and how many publishes to keep in flight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    confirm_timeout: Annotated[float, Field(gt=0, le=300)] = 5.0
    publish_window: Annotated[int, Field(ge=1, le=65535)] = 512
