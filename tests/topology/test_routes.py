import textwrap

from topology import names
from topology.compiled import compile_topology
from topology.envelope import Envelope
from topology.loader import parse_topology
from topology.routes import Route, delay_route, job_route
from topology.spec import Priority

MIXED = compile_topology(
    parse_topology(
        textwrap.dedent(
            """
            groups:
              mail: {jobs: ["mail.#"]}
              pay: {jobs: ["pay.*"], priority: {strategy: lanes}}
            """
        )
    )
)


def test_job_route_is_the_jobs_exchange_keyed_by_type_without_headers_for_priority_queues():
    assert job_route(MIXED, Envelope.new("mail.send")) == Route("taskq.jobs", "mail.send")
    assert job_route(MIXED, Envelope.new("mail.send")).headers == {}


def test_job_route_adds_the_priority_header_for_lane_groups():
    route = job_route(MIXED, Envelope.new("pay.charge", priority=Priority.URGENT))
    assert route.headers == {names.PRIORITY_HEADER: "urgent"}


def test_delay_route_goes_through_the_retry_exchange_with_the_tier_header():
    route = delay_route(MIXED, Envelope.new("mail.send"), 5000)
    assert route == Route("taskq.retry", "mail.send", {names.DELAY_HEADER: "4s"})
    lane = delay_route(MIXED, Envelope.new("pay.charge", priority=Priority.LOW), 5000)
    assert lane.headers == {names.DELAY_HEADER: "4s", names.PRIORITY_HEADER: "low"}


def test_next_hop_sends_an_early_job_on_until_its_time_has_come():
    from datetime import UTC, datetime, timedelta

    from topology.routes import next_hop

    start = datetime(2026, 1, 1, tzinfo=UTC)
    job = Envelope.new("mail.send", not_before=start + timedelta(milliseconds=5300))
    assert next_hop(MIXED, job, start).headers == {names.DELAY_HEADER: "4s"}
    assert next_hop(MIXED, job, start + timedelta(seconds=4)).headers == {names.DELAY_HEADER: "1s"}
    # A remainder below the resolution still waits: never early.
    assert next_hop(MIXED, job, start + timedelta(seconds=5)).headers == {names.DELAY_HEADER: "1s"}
    assert next_hop(MIXED, job, start + timedelta(milliseconds=5300)) is None
    assert next_hop(MIXED, Envelope.new("mail.send"), start) is None
