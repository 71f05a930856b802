"""A DLQ purge cannot be undone, so only the JSON literal ``true`` confirms it.

``"confirm": "true"`` and ``"confirm": 1`` used to pass as confirmation (pydantic's lax
booleans); now every value but ``true`` is refused with 422 and the DLQ stays whole.
"""

from __future__ import annotations

from typing import Any

import pytest

from jobstore.model import JobStatus
from tests.security.stack import Stack
from tests.security.test_dlq_pinning import fill_dlq

pytestmark = pytest.mark.rabbitmq


@pytest.mark.parametrize("confirm", ["true", 1, "1", "yes", "on", 1.0, [True], {"confirm": True}])
async def test_a_purge_confirmed_by_anything_but_true_is_refused(api_stack: Stack, confirm: Any):
    ids = await fill_dlq(api_stack, 3)
    answer = await api_stack.client.post("/admin/dlq/work/purge", json={"confirm": confirm})
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"] == [
        {"field": "confirm", "message": "Input should be a valid boolean"}
    ]
    assert await api_stack.occupied() == {"taskq.work.dlq": 3}
    stored = {job.id: job.status for job in await api_stack.jobs()}
    assert stored == dict.fromkeys(ids, JobStatus.DEAD)


async def test_only_the_literal_true_purges(api_stack: Stack):
    await fill_dlq(api_stack, 3)
    unconfirmed = await api_stack.client.post("/admin/dlq/work/purge", json={"confirm": False})
    assert unconfirmed.status_code == 422
    assert unconfirmed.json()["detail"] == "a purge cannot be undone: send confirm: true"
    assert await api_stack.occupied() == {"taskq.work.dlq": 3}
    purged = await api_stack.client.post("/admin/dlq/work/purge", json={"confirm": True})
    assert purged.json() == {"purged": 3, "left": 0}
    assert await api_stack.occupied() == {}


async def test_a_replay_of_everything_needs_the_literal_true_too(api_stack: Stack):
    await fill_dlq(api_stack, 2)
    answer = await api_stack.client.post("/admin/dlq/work/replay", json={"all": "true"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == "all"
    assert await api_stack.occupied() == {"taskq.work.dlq": 2}
