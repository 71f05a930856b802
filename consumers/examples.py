"""The example handlers the default topology ships: enough for the quick start to run end to end."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from consumers.handlers import JobContext, handler


class Email(BaseModel):
    """What the example email handler needs."""

    model_config = ConfigDict(extra="allow")

    to: str
    subject: str = "Welcome"


@handler("email.#")
async def send_email(payload: Email, ctx: JobContext) -> dict[str, str]:
    """Pretend to send an email: log it and return what would have been sent (no real mail)."""
    # The recipient and subject are the payload's: they go in the result, never in the logs.
    ctx.logger.info("would send an email (not sent: example handler)")
    return {"to": payload.to, "subject": payload.subject, "status": "recorded, not sent"}
