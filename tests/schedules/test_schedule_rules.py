"""When a schedule falls due: intervals counted from the epoch, cron in its zone, the misfire policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice

import pytest

from tests.helpers import compiled
from topology.errors import TopologyFileError
from topology.schedules import Misfire, ScheduleSpec, due_between, occurrence_key

T0 = datetime(2026, 3, 29, 0, 30, 0, tzinfo=UTC)  # Europe/Paris moves to summer time at 01:00 UTC


def spec(**fields: object) -> ScheduleSpec:
    return ScheduleSpec.model_validate({"job": "job.x", **fields})


def test_an_interval_falls_due_on_multiples_of_itself_since_the_epoch():
    every = spec(every="15m")
    assert list(islice(every.after(T0 + timedelta(seconds=1)), 3)) == [
        T0 + timedelta(minutes=15),
        T0 + timedelta(minutes=30),
        T0 + timedelta(minutes=45),
    ]
    assert every.next_after(T0) == T0 + timedelta(minutes=15)  # strictly after


def test_cron_reads_its_time_zone_across_a_daylight_saving_change():
    paris = spec(cron="30 3 * * *", timezone="Europe/Paris")
    # 03:30 in Paris is 01:30 UTC on the day summer time starts, 02:30 UTC the day before.
    assert paris.next_after(T0 - timedelta(days=1)) == datetime(2026, 3, 28, 2, 30, tzinfo=UTC)
    assert paris.next_after(T0) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("misfire", "fired"),
    [
        (Misfire.ALL, [60, 120, 180, 240, 300]),
        (Misfire.ONCE, [240, 300]),  # on-time ones fire: the missed ones are not run once more
        (Misfire.SKIP, [240, 300]),
    ],
)
def test_missed_occurrences_follow_the_misfire_policy(misfire: Misfire, fired: list[int]):
    minute = spec(every="1m", misfire=misfire, grace="90s")
    now = T0 + timedelta(seconds=300)
    got = due_between(minute, T0, now)
    assert [int((due - T0).total_seconds()) for due in got] == fired


def test_once_runs_the_newest_missed_occurrence_when_none_is_on_time():
    minute = spec(every="1m", misfire="once", grace="10s")
    now = T0 + timedelta(seconds=330)
    assert due_between(minute, T0, now) == [T0 + timedelta(seconds=300)]
    assert due_between(spec(every="1m", misfire="skip", grace="10s"), T0, now) == []


def test_catching_up_is_bounded():
    second = spec(every="1s", misfire="all")
    now = T0 + timedelta(days=2)
    got = due_between(second, T0, now, limit=100)
    assert len(got) == 100
    assert got[-1] == now


def test_an_occurrence_key_names_the_schedule_and_its_due_time_in_utc():
    due = datetime(2026, 3, 29, 3, 30, tzinfo=spec(every="1s").zone).replace(tzinfo=UTC)
    assert occurrence_key("nightly", due) == "nightly@2026-03-29T03:30:00Z"


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        ('{every: 1s, cron: "* * * * *", job: job.x}', "give either cron"),
        ('{cron: "0 3 * * *", timezone: Mars/Olympus, job: job.x}', "unknown time zone"),
        ('{cron: "61 * * * *", job: job.x}', "cron '61 * * * *' is not a cron expression"),
        ("{every: 1500ms, job: job.x}", "must be whole seconds"),
        ("{every: 1m, job: mail.x}", "no group takes job type 'mail.x'"),
        ("{every: 1m, job: taskq.callback}", "job type 'taskq.callback' is reserved"),
    ],
)
def test_the_file_refuses_what_would_never_fire_as_meant(schedule: str, problem: str):
    with pytest.raises(TopologyFileError) as refused:
        compiled(f"groups: {{d: {{jobs: ['job.#']}}}}\nschedules: {{bad: {schedule}}}")
    assert problem in str(refused.value)


def test_a_schedule_is_named_as_a_url_segment():
    with pytest.raises(TopologyFileError, match="'Upper' is not a valid schedule name"):
        compiled("groups: {d: {jobs: ['job.#']}}\nschedules: {Upper: {every: 1m, job: job.x}}")


def test_schedules_add_the_leadership_queue_only_when_declared():
    plain = compiled("groups: {d: {jobs: ['job.#']}}")
    assert plain.scheduler_queue == ""
    timed = compiled(
        """
        groups: {d: {jobs: ["job.#"]}}
        schedules: {beat: {every: 5s, job: job.beat}}
        """
    )
    [queue] = [q for q in timed.queues if q.name == timed.scheduler_queue]
    assert dict(queue.arguments)["x-single-active-consumer"] is True
    assert timed.schedule("beat") is not None
    assert hash(timed) == hash(
        compiled("""
        groups: {d: {jobs: ["job.#"]}}
        schedules: {beat: {every: 5s, job: job.beat}}
        """)
    )
