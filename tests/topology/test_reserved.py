"""Reserved job types in the topology: what they are, and which group patterns may take them."""

import pytest

from tests.topology.test_loader import problems
from topology.loader import parse_topology
from topology.reserved import TASKQ, Reservation, reservations, reserving, webhook_producer

GITHUB = """
webhooks:
  github: {scheme: github, secret_env: S, job: "github.{event}"}
  acme: {scheme: hmac, secret_env: S, header: X-Sig, job: acme.order}
"""


def test_taskq_and_every_webhook_template_reserve_their_types():
    spec = parse_topology(
        "groups: {github: {jobs: ['github.#']}, acme: {jobs: [acme.order]}}" + GITHUB
    )
    reserved = reservations(spec.webhooks.items())
    assert reserved == (
        Reservation("taskq.#", TASKQ, "taskq.callback"),
        Reservation("github.#", webhook_producer("github"), "github.#"),
        Reservation("acme.order", webhook_producer("acme"), "acme.order"),
    )
    assert [r.producer for r in reserving(reserved, "github.push")] == ["webhook:github"]
    assert [r.producer for r in reserving(reserved, "taskq.anything")] == ["taskq"]
    assert reserving(reserved, "acme.refund") == []
    assert reserving(reserved, "email") == []


@pytest.mark.parametrize(
    ("groups", "hooks"),
    [
        # Exactly what the source makes: the group that receives its events.
        ("{github: {jobs: ['github.#']}, acme: {jobs: [acme.order]}}", GITHUB),
        # A part of it, beside a public type: each pattern is wholly reserved or public.
        (
            "{github: {jobs: ['github.push', deploy]}, acme: {jobs: [acme.order, acme.refund]}}",
            GITHUB,
        ),
        ("{github: {jobs: ['github.*']}, acme: {jobs: [acme.order]}}", GITHUB),
        # Nobody makes a one-word reserved type, nor "taskq.welcome.x".
        ("{one: {jobs: ['*']}, welcome: {jobs: ['#.welcome.*']}}", ""),
    ],
)
def test_patterns_that_take_only_reserved_or_only_public_types_load(groups: str, hooks: str):
    spec = parse_topology(f"groups: {groups}" + hooks)
    assert "callbacks" in spec.groups


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        (
            "['#']",
            "'#' takes reserved job types such as 'taskq.callback' ('taskq.callback': only "
            "taskq itself produces taskq.* types",
        ),
        ("['*.callback']", "'*.callback' takes reserved job types such as 'taskq.callback'"),
        ("['taskq.#']", "'taskq.#' takes reserved job types such as 'taskq.callback'"),
        (
            "['#.push']",
            "'#.push' takes reserved job types such as 'github.push' ('github.#': only the "
            "webhook source 'github' produces these types, once a delivery's signature is "
            "verified (POST /webhooks/github)) as well as public ones; narrow it so it takes "
            "no reserved type, or list exactly 'github.#' in the group that receives them",
        ),
        ("['acme.#']", "'acme.#' takes reserved job types such as 'acme.order'"),
    ],
)
def test_a_public_pattern_reaching_into_reserved_types_is_refused(jobs: str, expected: str):
    text = f"groups: {{hooks: {{jobs: {jobs}}}, github: {{jobs: ['github.#']}}}}" + GITHUB
    if jobs != "['acme.#']":
        text = text.replace("groups: {", "groups: {acme: {jobs: [acme.order]}, ", 1)
    found = [p for p in problems(text) if "reserved" in p]
    assert len(found) == 1, found
    assert found[0].startswith("groups.hooks.jobs (line 1): ")
    assert expected in found[0]


def test_an_event_placeholder_must_be_a_whole_word_so_its_types_form_a_pattern():
    text = "groups: {gh: {jobs: ['gh-push']}}\nwebhooks:\n  gh: {scheme: github, secret_env: S, job: 'gh-{event}'}\n"
    assert any("{event} must be a whole dot-separated word" in p for p in problems(text))
