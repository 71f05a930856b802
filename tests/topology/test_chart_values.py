import textwrap

from topology.compiled import compile_topology
from topology.export import blob_retention_days, chart_values
from topology.loader import parse_topology

DAY = 86400.0


def compiled(text: str):
    return compile_topology(parse_topology(textwrap.dedent(text)))


def test_blob_retention_covers_the_longest_delay_run_and_retention_plus_the_grace():
    topology = compiled(
        """
        groups:
          quick:
            jobs: [a]
            retention: 2d
            dlq: {retention: 3d}
          slow:
            jobs: [b]
            retention: 20d
            dlq: {retention: 4d}
        """
    )
    # slow keeps a finished job 20 days (longer than the built-in callbacks group's 14 days of
    # dead letters); a week's delay and a day's grace come on top, and the attempts' minutes
    # round the sum up to one more day.
    assert blob_retention_days(topology, max_delay=7 * DAY, orphan_grace=DAY) == 29


def test_blob_retention_counts_every_attempt_and_backoff():
    topology = compiled(
        """
        groups:
          g:
            jobs: [a]
            timeout: 29m
            retry: {max_attempts: 48, base: 15m, factor: 1, max: 15m, jitter: none}
            retention: 20d
            dlq: {retention: 1d}
        """
    )
    # 48 attempts of up to 29 minutes and 47 backoffs of 15 minutes: about 1.46 days.
    assert blob_retention_days(topology, max_delay=DAY, orphan_grace=DAY) == 24


def test_no_blob_expiry_is_safe_when_a_group_keeps_dead_letters_until_replayed():
    topology = compiled("groups:\n  g:\n    jobs: [a]\n    dlq: {retention: null}\n")
    assert blob_retention_days(topology, max_delay=DAY, orphan_grace=DAY) is None
    values = chart_values(topology, "text", max_delay=DAY, orphan_grace=DAY)
    assert values["topology"]["blobRetentionDays"] is None


def test_chart_values_hold_the_file_and_one_entry_per_group_in_order(topology):
    values = chart_values(topology, "the file", max_delay=30 * DAY, orphan_grace=DAY)["topology"]
    assert values["file"] == "the file"
    assert values["namespace"] == topology.namespace
    assert [g["name"] for g in values["groups"]] == [g.name for g in topology.groups]
    assert [g["deployment"] for g in values["groups"]] == [
        f"taskq-worker-{g.name}" for g in topology.groups
    ]
    # The packaged topology: 30 days' delay, 14 days of dead letters, a day's grace.
    assert values["blobRetentionDays"] == 46
