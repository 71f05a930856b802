"""The console in headless Chromium against ``taskctl up``: a failed job found, replayed, seen to succeed; every page checked by axe-core and with the keyboard."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from axe_playwright_python.base import AXE_FILE_PATH
from playwright.sync_api import Browser, Page, expect, sync_playwright

from jobstore.sqlite import SqliteJobStore
from producers.auth.principal import Scope
from tests.credentials import issue_key
from tests.helpers import interrupted, reap, wait_healthy
from tests.taskctl.test_up import free_port, start_up, up_env

pytestmark = [pytest.mark.rabbitmq, pytest.mark.browser]
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
DOCS_IMAGES = Path(__file__).parents[2] / "docs" / "images"
# The two screenshots the README shows, written there only when asked (they are committed).
README_SHOTS = {"overview": "console-overview.png", "job-succeeded": "console-job.png"}
WAIT_MS = 45_000  # a worker's first delivery and the broker's statistics take a few seconds
expect.set_options(timeout=WAIT_MS)


@dataclass
class Stack:
    base: str
    admin_key: str
    reader_key: str
    fixed: Path  # the flaky handler succeeds once this file exists
    shots: Path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"no {CHROMIUM}: apt-get install chromium chromium-driver"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (deploy/local/env.sh ensure_chromium)")
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def stack(vhost, tmp_path: Path) -> Iterator[Stack]:
    port = free_port()
    env = up_env(vhost, tmp_path, port)
    fixed = tmp_path / "fixed"
    env |= {
        "TASKQ_HANDLERS": "consumers.examples,tests.taskctl.flaky_handlers",
        "TASKQ_TEST_FIXED": str(fixed),
    }
    process = start_up(env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process, within=60)
        admin_key = (tmp_path / ".taskq" / "admin.key").read_text().strip()
        # Playwright's sync API runs a loop in this thread: the store's coroutine runs in another.
        with ThreadPoolExecutor(1) as thread:
            reader_key = thread.submit(asyncio.run, _reader_key(tmp_path)).result()
        shots = tmp_path / "screenshots"
        shots.mkdir()
        yield Stack(base, admin_key, reader_key, fixed, shots)
    finally:
        # Ctrl-C, as a user stops it: a SIGKILL would leave its API and workers running.
        if process.poll() is None:
            with suppress(subprocess.TimeoutExpired):
                interrupted(process)
        reap(process)


async def _reader_key(tmp_path: Path) -> str:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    try:
        return await issue_key(store, scopes=(Scope.JOBS_READ,), name="support (read only)")
    finally:
        await store.close()


def shot(stack: Stack, page: Page, name: str) -> None:
    path = stack.shots / f"{len(list(stack.shots.iterdir())):02d}-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if name in README_SHOTS and os.environ.get("TASKQ_TEST_README_IMAGES") == "1":
        DOCS_IMAGES.mkdir(exist_ok=True)
        shutil.copy(path, DOCS_IMAGES / README_SHOTS[name])


def submit(stack: Stack, payload: dict) -> str:
    answer = httpx.post(
        f"{stack.base}/jobs",
        json={"type": "job.flaky", "payload": payload},
        headers={"Authorization": f"Bearer {stack.admin_key}"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def log_in(page: Page, key: str) -> None:
    """Log in on the login form the page shows, with the keyboard only."""
    expect(page.locator("#credential")).to_be_focused()  # typed straight away, no mouse
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    page.wait_for_load_state()


def test_on_call_finds_a_failed_job_replays_it_and_watches_it_succeed(
    browser: Browser, stack: Stack
):
    failed = submit(stack, {"order": 1})
    stuck = submit(stack, {"order": 2, "always": True})
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(WAIT_MS)

    page.goto(f"{stack.base}/console/jobs")
    expect(page).to_have_url(f"{stack.base}/console/login?next=/console/jobs")
    shot(stack, page, "login")
    log_in(page, stack.admin_key)
    expect(page).to_have_url(f"{stack.base}/console/jobs")  # where it was going

    page.get_by_role("link", name="Overview").click()
    # Both jobs die at once; the live figures show them, coloured, without a reload.
    expect(page.locator('tr[data-group="default"] td[data-field="dead"]')).to_have_text("2")
    expect(page.locator('tr[data-group="default"] td[data-field="dead"]')).to_have_class(
        "attention"
    )
    shot(stack, page, "overview")

    page.get_by_role("link", name="Topology").click()
    expect(page.locator("main")).to_contain_text("exactly what the topology file declares")
    expect(page.locator("svg title").first).to_have_text(
        "Exchanges, queues, delay tiers and dead-letter queues"
    )
    shot(stack, page, "topology")
    page.get_by_role("link", name="Webhooks").click()
    expect(page.locator("h1")).to_have_text("Webhook sources")
    shot(stack, page, "webhooks")
    page.get_by_role("link", name="Scaling").click()
    expect(page.locator("main")).to_contain_text(
        "what the autoscaler last saw and decided".capitalize()
    )
    shot(stack, page, "scaling")

    page.get_by_role("link", name="Jobs").click()
    page.get_by_label("Type").fill("job.flaky")
    page.get_by_label("Status").select_option("dead")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#jobs tbody tr")).to_have_count(2)
    shot(stack, page, "jobs-dead")
    page.locator(f'a[href="/console/jobs/{failed}"]').click()
    expect(page.locator('[data-field="status"]')).to_have_text("dead")
    expect(page.locator('[data-field="last_error"]')).to_contain_text("the upstream answered 500")
    expect(page.locator("main")).not_to_contain_text("hunter2")  # redacted as in the logs
    shot(stack, page, "job-dead")

    page.get_by_role("link", name="Inspect the dead letter").click()
    expect(page.locator("main")).to_contain_text("permanent")
    shot(stack, page, "dead-letter")
    page.go_back()

    stack.fixed.touch()  # the upstream is fixed: the next attempt succeeds
    page.get_by_role("button", name="Replay from the dead-letter queue").click()
    expect(page.locator('[data-field="status"]')).to_have_text(
        "succeeded"
    )  # live, no reload by hand
    expect(page.locator("main")).to_contain_text('"fixed": "yes"')
    shot(stack, page, "job-succeeded")

    page.get_by_role("link", name="Dead letters").click()
    page.get_by_role("link", name="default").click()
    expect(page.locator("#letters tbody tr")).to_have_count(1)
    expect(page.locator("#letters")).to_contain_text(stuck)
    expect(page.locator("#audit tbody tr").first).to_contain_text("replay")
    expect(page.locator("#audit tbody tr").first).to_contain_text("1 chosen")
    shot(stack, page, "dead-letters")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{stack.base}/console/login")
    page.close()


def test_a_jobs_read_key_sees_no_admin_controls_and_its_crafted_post_gets_403(
    browser: Browser, stack: Stack
):
    stuck = submit(stack, {"order": 3, "always": True})
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{stack.base}/console/login")
    log_in(page, stack.reader_key)
    expect(page).to_have_url(f"{stack.base}/console/jobs")
    nav = page.get_by_role("navigation", name="Console")
    expect(nav.get_by_role("link")).to_have_text(["Jobs"])
    shot(stack, page, "reader-jobs")

    page.goto(f"{stack.base}/console/jobs/{stuck}")
    expect(page.locator('[data-field="status"]')).to_have_text("dead")
    expect(page.get_by_role("button", name="Replay from the dead-letter queue")).to_have_count(0)
    shot(stack, page, "reader-job")

    csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
    assert csrf
    for path, form in (
        ("/console/dlq/default/replay", {"csrf": csrf, "id": stuck}),
        ("/console/dlq/default/purge", {"csrf": csrf, "all": "1", "confirm": "default"}),
    ):
        crafted = page.request.post(f"{stack.base}{path}", form=form)
        assert crafted.status == 403, path
    page.goto(f"{stack.base}/console/dlq/default")
    expect(page.locator("main")).to_contain_text("needs a credential with the admin scope")
    shot(stack, page, "reader-refused")
    context.close()


def keyboard_problems(page: Page) -> list[str]:
    """Return what keeps a keyboard user from the page: the skip link first and working, a visible focus."""
    page.keyboard.press("Tab")
    first = page.evaluate(
        "() => { const e = document.activeElement, r = e.getBoundingClientRect();"
        " return [e.className, e.textContent.trim(), r.left >= 0 && r.top >= 0]; }"
    )
    problems = [] if first == ["skip", "Skip to content", True] else [f"first Tab: {first}"]
    page.keyboard.press("Enter")
    if page.evaluate("() => document.activeElement.id") != "main":
        problems.append("the skip link does not move the focus to the content")
    # Every element Tab reaches shows where the focus is (until the focus goes round).
    seen: set[str] = set()
    for _ in range(300):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => { const e = document.activeElement, s = getComputedStyle(e);"
            " const path = e.tagName + '#' + e.id + '.' + e.className + ':' + (e.name || e.textContent.trim().slice(0, 30));"
            " return [path, e === document.body || (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0)]; }"
        )
        path, visible = focused
        if path in seen:
            break
        seen.add(path)
        if not visible:
            problems.append(f"no visible focus on {path}")
    return problems


def axe_violations(page: Page) -> list[str]:
    """Return axe-core's serious and critical violations on the page, each with where it is."""
    # The console's CSP admits only its own scripts: the context bypasses it for axe alone.
    page.add_script_tag(path=str(AXE_FILE_PATH))
    found = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in found["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_every_page_passes_axe_and_works_with_the_keyboard_alone(browser: Browser, stack: Stack):
    dead = submit(stack, {"order": 5, "always": True})
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{stack.base}/console/login")
    report = {"login": axe_violations(page)}
    log_in(page, stack.admin_key)
    expect(page).to_have_url(f"{stack.base}/console/")  # logged in: the session's cookie is set
    page.goto(f"{stack.base}/console/jobs/{dead}")
    expect(page.locator('[data-field="status"]')).to_have_text("dead")
    pages = {
        "overview": "/console/",
        "topology": "/console/topology",
        "jobs": "/console/jobs?type=job.flaky",
        "job": f"/console/jobs/{dead}",
        "webhooks": "/console/webhooks",
        "scaling": "/console/scaling",
        "dead letters": "/console/dlq",
        "a group's dead letters": "/console/dlq/default",
        "a dead letter": f"/console/dlq/default/letters/{dead}",
        "a refusal": "/console/dlq/nosuchgroup",
    }
    for name, path in pages.items():
        page.goto(f"{stack.base}{path}")
        page.wait_for_load_state()
        report[name] = axe_violations(page) + keyboard_problems(page)
    context.close()
    assert {name: found for name, found in report.items() if found} == {}
