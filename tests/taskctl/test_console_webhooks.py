"""The webhook sources page: accepted, duplicate and refused deliveries, with the refusals' reasons."""

from __future__ import annotations

import httpx

from producers.api.app import Services
from producers.auth.principal import Scope
from producers.submit import Submitter
from taskctl.assembly import api_app
from tests.credentials import issue_key
from tests.fakes.blobs import InMemoryBlobStore
from tests.fakes.publisher import InMemoryPublisher
from tests.fakes.store import InMemoryJobStore
from tests.taskctl.console_client import log_in
from tests.webhooks.signing import sign_github
from topology.compiled import CompiledTopology
from topology.settings import load_settings

SECRET = "It's a Secret to Everybody"
BODY = b'{"zen": "Keep it logically awesome.", "password": "hunter2"}'


def github(signature: str, delivery: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-hub-signature-256": signature,
        "x-github-event": "push",
        "x-github-delivery": delivery,
    }


async def test_the_page_shows_each_sources_deliveries_duplicates_and_refusals(
    topology: CompiledTopology,
):
    store = InMemoryJobStore()
    submitter = Submitter(topology, InMemoryPublisher(topology), store, InMemoryBlobStore())
    environ = {"TASKQ_WEBHOOK_GITHUB_SECRET": SECRET}
    app = api_app(load_settings({}), Services(submitter), environ)
    key = await issue_key(store, scopes=(Scope.ADMIN, Scope.JOBS_READ))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        signed = github(sign_github(SECRET.encode(), BODY), "delivery-1")
        first = await c.post("/webhooks/github", content=BODY, headers=signed)
        assert first.status_code == 202
        again = await c.post("/webhooks/github", content=BODY, headers=signed)
        assert again.headers["idempotent-replayed"] == "true"
        forged = await c.post(
            "/webhooks/github", content=BODY, headers=github("sha256=" + "0" * 64, "delivery-2")
        )
        assert forged.status_code == 401
        await log_in(c, key)
        page = await c.get("/console/webhooks")
    assert page.status_code == 200
    github_part = page.text.split('id="source-1"')[1].split("</section>")[0]
    assert "replayed (duplicate suppressed)</td>\n          <td>1</td>" in github_part
    assert "accepted</td>\n          <td>1</td>" in github_part
    assert 'rejected_signature</td>\n          <td class="attention">1</td>' in github_part
    rows = github_part.split("<tbody>")[2].split("</tr>")
    assert "rejected_signature" in rows[0]
    assert "signature" in rows[0].split('class="error">')[1]  # why it was refused
    assert first.json()["id"] in rows[2]
    assert "delivery-1" in rows[2]
    assert "hunter2" not in page.text
    assert "No delivery yet." in page.text  # the standard source received nothing
