"""The baseline for bench/http_ingest.py: a minimal FastAPI endpoint that validates and publishes.

It does the least a correct ingest endpoint must: validate the body with pydantic, publish a
persistent, mandatory message with publisher confirms (aio-pika, one robust connection), and
answer 202 only after the confirm. No store, no idempotency, no envelope.
Run: python bench/minimal_api.py PORT AMQP_URL
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import orjson
import uvicorn
from fastapi import FastAPI, Response
from pydantic import BaseModel, ConfigDict, JsonValue


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    payload: JsonValue = None


def build(amqp_url: str) -> FastAPI:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connection = await aio_pika.connect_robust(amqp_url)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        state["exchange"] = await channel.get_exchange("taskq.jobs", ensure=False)
        yield
        await connection.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/jobs", status_code=202)
    async def submit(job: Job) -> Response:
        job_id = str(uuid.uuid4())
        body = orjson.dumps({"id": job_id, "type": job.type, "payload": job.payload})
        message = aio_pika.Message(
            body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=job_id
        )
        await state["exchange"].publish(message, job.type, mandatory=True)
        return Response(
            orjson.dumps({"id": job_id}), status_code=202, media_type="application/json"
        )

    return app


if __name__ == "__main__":
    uvicorn.run(build(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
