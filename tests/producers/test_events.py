"""Status event bodies: the event fields of the job's public view, nothing else."""

from __future__ import annotations

import orjson

from jobstore.model import JobStatus
from producers.events import event_body, event_key
from producers.tenancy import job_view
from tests.producers.test_store import job

EVENT_FIELDS = ("id", "type", "status", "attempts", "updated_at", "last_error", "result", "tenant")


def test_an_event_carries_the_event_fields_of_the_jobs_view() -> None:
    record = job(status=JobStatus.SUCCEEDED, result={"sent": ["ü"]}, last_error="Boom: once")
    view = job_view(record)
    assert orjson.loads(event_body(record)) == {name: view[name] for name in EVENT_FIELDS}
    assert event_key(record) == f"{record.type}.succeeded"
