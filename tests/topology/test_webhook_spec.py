"""Webhook sources in the topology file: what loads, and what each mistake is told."""

import textwrap

import pytest

from tests.topology.test_loader import problems
from topology.compiled import compile_topology
from topology.loader import load_topology, parse_topology
from topology.spec import Priority, WebhookScheme

GROUPS = """
groups:
  github: {jobs: ["github.#"]}
  hooks: {jobs: ["hook.acme.#"]}
"""


def sources(text: str) -> str:
    return GROUPS + textwrap.dedent(text)


def test_the_default_topology_declares_the_github_and_standard_sources():
    topology = compile_topology(load_topology())
    declared = dict(topology.webhooks)
    github, standard = declared["github"], declared["standard"]
    assert (github.scheme, github.secret_env) == (
        WebhookScheme.GITHUB,
        ("TASKQ_WEBHOOK_GITHUB_SECRET",),
    )
    assert (standard.scheme, standard.secret_env) == (
        WebhookScheme.STANDARD,
        ("TASKQ_WEBHOOK_STANDARD_SECRET",),
    )
    assert github.job_type("pull_request") == "github.pull_request"
    assert topology.group_for(standard.job_type("invoice.paid") or "") is not None


def test_a_full_hmac_source_loads_with_rotation_and_header_names_lowercased():
    spec = parse_topology(
        sources(
            """
            webhooks:
              acme:
                scheme: hmac
                secret_env: [ACME_NEW, ACME_OLD]
                secret_file: /run/secrets/acme
                header: X-Acme-Signature
                algorithm: sha512
                encoding: base64
                prefix: "sha512="
                timestamp_header: X-Acme-Time
                id_header: X-Acme-Id
                event_header: X-Acme-Event
                tolerance: 2m
                priority: high
                job: "hook.acme.{event}"
            """
        )
    )
    acme = spec.webhooks["acme"]
    assert acme.secret_env == ("ACME_NEW", "ACME_OLD")
    assert acme.secret_file == ("/run/secrets/acme",)
    assert (acme.header, acme.timestamp_header, acme.event_header) == (
        "x-acme-signature",
        "x-acme-time",
        "x-acme-event",
    )
    assert (acme.tolerance, acme.priority) == (120_000, Priority.HIGH)
    assert acme.job_type("order.paid") == "hook.acme.order.paid"
    assert acme.job_type("bad event") is None  # not a job type: the receiver answers 400
    assert acme.job_type(None) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("x: {scheme: smtp, secret_env: S, job: hook.x}", "scheme"),
        ("x: {scheme: github, job: hook.x}", "secret_env (an environment variable)"),
        ("x: {scheme: hmac, secret_env: S, job: hook.x}", "needs 'header'"),
        (
            "x: {scheme: github, secret_env: S, header: X-Sig, job: hook.x}",
            "only apply to scheme: hmac",
        ),
        ("x: {scheme: hmac, secret_env: S, header: X-Sig, job: 'hook.{event}'}", "no event_header"),
        (
            "x: {scheme: github, secret_env: S, job: 'hook.{type}'}",
            "the only placeholder is {event}",
        ),
        ("x: {scheme: github, secret_env: S, job: 'hook..x'}", "does not make a job type"),
        (
            "x: {scheme: hmac, secret_env: S, header: 'X Sig', job: hook.x}",
            "not an HTTP header name",
        ),
        (
            "x: {scheme: github, secret_env: S, job: 'other.{event}'}",
            "no group takes job type 'other.push'",
        ),
        (
            "Bad_Name: {scheme: github, secret_env: S, job: 'github.{event}'}",
            "not a valid source name",
        ),
        ("x: {scheme: github, secret_env: S, job: 'github.{event}', colour: red}", "colour"),
    ],
)
def test_each_mistake_in_a_source_is_named(body: str, expected: str):
    found = problems(sources("webhooks:\n  " + body))
    assert any(expected in p and p.startswith("webhooks.") for p in found), found
