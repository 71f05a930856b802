"""The API and a worker on the real broker: jobs through success, retry and the DLQ, then a scrape."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumers.handlers import JobContext, Permanent
from jobstore.model import JobStatus
from producers.api.app import Services, create_app
from tests.consumers.rig import Rig
from tests.credentials import bearer, issue_key
from tests.helpers import eventually

pytestmark = pytest.mark.rabbitmq


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_scraped_metrics_count_what_the_jobs_went_through(rig: Rig):
    @rig.registry.handler("mail.obs")
    async def observed(payload: dict, ctx: JobContext) -> str:
        if payload["mode"] == "dead":
            raise Permanent("no")
        if payload["mode"] == "retry" and ctx.attempt == 1:
            raise RuntimeError("once")
        return "ok"

    app = create_app(Services(rig.submitter), registry=rig.metrics.registry)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://taskq.test",
        headers=bearer(await issue_key(rig.submitter.store)),
    ) as client:
        before = samples((await client.get("/metrics")).text)
        ids = {}
        for mode in ("ok", "retry", "dead"):
            answer = await client.post(
                "/jobs", json={"type": "mail.obs", "payload": {"mode": mode}}
            )
            assert answer.status_code == 202
            ids[mode] = answer.json()["id"]
        await rig.until(ids["ok"], JobStatus.SUCCEEDED)
        await rig.until(ids["retry"], JobStatus.SUCCEEDED)
        await rig.until(ids["dead"], JobStatus.DEAD)
        found: dict = {}

        async def counted() -> bool:
            found.update(samples((await client.get("/metrics")).text))
            done = "taskq_jobs_completed_total"
            return (
                value(found, done, group="mail", type="mail.obs", outcome="succeeded")
                - value(before, done, group="mail", type="mail.obs", outcome="succeeded")
                == 2
            )

        await eventually(counted, within=5)

    def delta(name: str, **labels: str) -> float:
        return value(found, name, **labels) - value(before, name, **labels)

    assert delta("taskq_jobs_submitted_total", group="mail", priority="medium") == 3
    accepted = {"source": "api", "group": "mail", "priority": "medium", "outcome": "accepted"}
    assert delta("taskq_job_submissions_total", **accepted) == 3
    assert delta("taskq_jobs_started_total", group="mail", type="mail.obs") == 4
    for outcome, count in (("succeeded", 2), ("retried", 1), ("dead", 1)):
        assert (
            delta("taskq_jobs_completed_total", group="mail", type="mail.obs", outcome=outcome)
            == count
        )
    assert delta("taskq_job_duration_seconds_count", group="mail", priority="medium") >= 4
    assert delta("taskq_publish_confirm_seconds_count", exchange_kind="retry") >= 1
    assert delta("taskq_publish_confirm_seconds_count", exchange_kind="dlx") >= 1
    assert delta("taskq_api_requests_total", route="/jobs", method="POST", status="202") == 3


async def test_the_exposition_passes_promtool_check_metrics(rig: Rig, promtool: str):
    import asyncio
    import subprocess

    @rig.registry.handler("mail.lint")
    async def lint(payload, ctx: JobContext) -> str:
        return "ok"

    job_id = await rig.submit("mail.lint")
    await rig.until(job_id, JobStatus.SUCCEEDED)
    app = create_app(Services(rig.submitter), registry=rig.metrics.registry)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://taskq.test",
        headers=bearer(await issue_key(rig.submitter.store)),
    ) as client:
        await client.post("/jobs", json={"type": "mail.lint"})
        text = (await client.get("/metrics")).text
    checked = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    taskq_problems = [
        line for line in (checked.stdout + checked.stderr).splitlines() if "taskq_" in line
    ]
    assert taskq_problems == [], taskq_problems
