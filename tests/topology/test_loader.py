import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import write_topology
from topology.errors import TopologyFileError
from topology.loader import load_topology, parse_topology, topology_path
from topology.settings import load_settings
from topology.spec import Jitter, PriorityStrategy, QueueType


def problems(text: str) -> list[str]:
    with pytest.raises(TopologyFileError) as info:
        parse_topology(textwrap.dedent(text), source="t.yaml")
    assert str(info.value).startswith("invalid topology file t.yaml:")
    return info.value.problems


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def test_default_topology_loads_with_the_groups_it_ships():
    spec = load_topology()
    assert spec.namespace == "taskq"
    assert {"email", "github", "standard", "default"} <= set(spec.groups)
    assert spec.groups["email"].jobs == ("email", "email.*")
    assert spec.groups["github"].retry.max_attempts == 12
    # The group keeps the defaults it did not override.
    assert spec.groups["github"].retry.base == 1000
    assert spec.groups["github"].retry.jitter is Jitter.FULL


def test_group_overrides_merge_key_by_key_when_defaults_are_set():
    spec = parse_topology(
        textwrap.dedent(
            """
            defaults:
              retry: {max_attempts: 3, base: 2s}
              prefetch: 4
              concurrency: 2
            groups:
              a: {jobs: [a], retry: {factor: 3}}
            """
        )
    )
    retry = spec.groups["a"].retry
    assert (retry.max_attempts, retry.base, retry.factor, retry.max) == (3, 2000, 3.0, 900_000)
    assert spec.groups["a"].prefetch == 4


def test_taskq_topology_env_points_at_another_file_when_set(tmp_path: Path):
    path = write_topology(tmp_path, "groups: {x: {jobs: [x]}}")
    chosen = load_settings({"TASKQ_TOPOLOGY": str(path)}).locations
    assert topology_path(chosen) == path
    assert set(load_topology(topology_path(chosen)).groups) == {"x", "callbacks"}
    assert topology_path(load_settings({}).locations).name == "default.yaml"


def test_missing_file_names_the_file_and_the_env_var(tmp_path: Path):
    with pytest.raises(TopologyFileError) as info:
        load_topology(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)
    assert "TASKQ_TOPOLOGY" in str(info.value)


def test_unknown_key_is_named_with_its_line_and_a_suggestion():
    message = one_problem(
        """
        groups:
          email:
            jobs: [email]
            prefetchh: 10
        """
    )
    assert message.startswith("groups.email.prefetchh (line 5): unknown key 'prefetchh'")
    assert "did you mean 'prefetch'?" in message


def test_unknown_nested_key_lists_the_known_keys():
    message = one_problem("groups: {a: {jobs: [a], retry: {attempts: 3}}}")
    assert "groups.a.retry.attempts" in message
    assert "max_attempts" in message


def test_unknown_top_level_key_is_refused():
    message = one_problem("groups: {a: {jobs: [a]}}\ngrups: {}\n")
    assert message.startswith("grups (line 2): unknown key 'grups'; did you mean 'groups'?")


def test_job_type_taken_by_two_groups_names_both_and_an_example_key():
    message = one_problem(
        """
        groups:
          a: {jobs: ["email.*"]}
          b: {jobs: ["#.welcome"]}
        """
    )
    assert "groups.b.jobs" in message
    assert "'#.welcome' overlaps 'email.*' of group 'a'" in message
    assert "'email.welcome'" in message


def test_same_exact_job_type_in_two_groups_is_refused():
    assert "overlaps 'email'" in one_problem("groups: {a: {jobs: [email]}, b: {jobs: [email]}}")


def test_job_type_listed_twice_in_a_group_is_refused():
    assert "more than once" in one_problem("groups: {a: {jobs: [x, x]}}")


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        ("a..b", "has the word ''"),
        ("a b", "has the word 'a b'"),
        ("a.*x", "has the word '*x'"),
        ("x" * 256, "255-byte"),
    ],
)
def test_bad_job_type_says_which_word_is_wrong(job: str, expected: str):
    assert expected in one_problem(f"groups: {{a: {{jobs: [{job!r}]}}}}")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("timeout: 1x", "'1x' is not a duration"),
        ("timeout: -3", "is negative"),
        ("timeout: 45m", "below RabbitMQ's 30m consumer_timeout"),
        ("timeout: 0s", "must be above 0"),
        ("retry: {max_attempts: 0}", "greater than or equal to 1"),
        ("retry: {base: 1m, max: 10s}", "max (10s) is below base (1m)"),
        ("retry: {base: 0s}", "base must be above zero"),
        ("retry: {factor: 0.5}", "greater than or equal to 1"),
        ("retry: {jitter: some}", "'none', 'full' or 'equal'"),
        ("concurrency: 64", "concurrency (64) exceeds prefetch (16)"),
        ("prefetch: 0", "greater than or equal to 1"),
        ("scale: {min: 5, max: 2}", "max (2) is below min (5)"),
        (
            "priority: {strategy: queue, queue_type: quorum}",
            "keeps no priorities before RabbitMQ 4.0",
        ),
        ("priority: {strategy: fifo}", "'queue' or 'lanes'"),
        ("dlq: {retention: forever}", "'forever' is not a duration"),
        ("dlq: {max_length: 0}", "greater than or equal to 1"),
        ("retention: 500ms", "retention 500ms is below 1s"),
        ("retention: soon", "'soon' is not a duration"),
    ],
)
def test_bad_group_setting_is_explained(setting: str, expected: str):
    message = one_problem(f"groups:\n  a:\n    jobs: [a]\n    {setting}\n")
    assert message.startswith("groups.a")
    assert "(line 4)" in message
    assert expected in message


def test_bad_default_is_reported_at_defaults_not_at_each_group():
    found = problems(
        """
        defaults:
          timeout: soon
        groups:
          a: {jobs: [a]}
          b: {jobs: [b]}
        """
    )
    assert found[0].startswith("defaults.timeout (line 3): 'soon' is not a duration")


def test_jobs_in_defaults_are_refused():
    assert "belong to a group" in problems("defaults: {jobs: [a]}\ngroups: {a: {jobs: [a]}}")[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("namespace: Taskq\ngroups: {a: {jobs: [a]}}", "not a valid namespace"),
        ("namespace: amqx\ngroups: {a: {jobs: [a]}}", "not a valid namespace"),
        ("groups: {Email: {jobs: [a]}}", "not a valid group name"),
        ("groups: {jobs: {jobs: [a]}}", "is reserved"),
        ("groups: {}", "declare at least one group"),
        ("groups: {a: [x]}", "must be a mapping"),
        ("groups: {a: {}}", "groups.a.jobs (line 1): is required"),
        ("version: 2\ngroups: {a: {jobs: [a]}}", "version"),
        ("delays: {resolution: 1ms}\ngroups: {a: {jobs: [a]}}", "at least 10ms"),
        ("delays: {resolution: 1m, longest: 1s}\ngroups: {a: {jobs: [a]}}", "longest is below"),
    ],
)
def test_invalid_file_level_values_are_explained(text: str, expected: str):
    assert any(expected in p for p in problems(text)), problems(text)


def test_duplicate_yaml_key_is_refused_with_both_lines():
    message = one_problem("groups:\n  a: {jobs: [a]}\n  a: {jobs: [b]}\n")
    assert "groups.a (line 3): duplicate key, first set on line 2" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("- a\n- b\n", "must be a mapping"),
        ("groups: {a: [\n", "not valid YAML"),
    ],
)
def test_unusable_documents_are_explained(text: str, expected: str):
    assert expected in one_problem(text)


def test_every_problem_is_reported_at_once():
    found = problems(
        """
        groups:
          a: {jobs: [a], timeout: x}
          b: {jobs: [b], prefetch: -1}
        """
    )
    assert len(found) == 2


def test_lanes_with_quorum_queues_are_accepted():
    spec = parse_topology(
        "groups: {a: {jobs: [a], priority: {strategy: lanes, queue_type: quorum}}}"
    )
    assert spec.groups["a"].priority.strategy is PriorityStrategy.LANES
    assert spec.groups["a"].priority.queue_type is QueueType.QUORUM


def test_replicas_are_refused_for_classic_queues_naming_the_fix():
    with pytest.raises(TopologyFileError, match="replicas applies to quorum queues only"):
        parse_topology("groups: {a: {jobs: [a], priority: {strategy: lanes, replicas: 3}}}")


def test_spec_is_frozen_and_comparable():
    one = parse_topology("groups: {a: {jobs: [a]}}")
    two = parse_topology("groups:\n  a:\n    jobs: [a]\n")
    assert one == two
    assert hash(one) == hash(two)
    with pytest.raises(ValueError, match="frozen"):
        one.groups["a"].prefetch = 3  # type: ignore[misc]


def test_group_names_that_yaml_reads_as_booleans_stay_names():
    spec = parse_topology("groups:\n  no: {jobs: [a]}\n  on: {jobs: [b]}\n")
    assert set(spec.groups) == {"no", "on", "callbacks"}


yaml_scalars = st.none() | st.booleans() | st.integers(-5, 10**6) | st.text(max_size=12)
group_bodies = st.fixed_dictionaries(
    {"jobs": st.lists(st.sampled_from(["a", "b.*", "#", "c.#", "d..e", "*"]), max_size=3)},
    optional={
        "prefetch": yaml_scalars,
        "concurrency": yaml_scalars,
        "timeout": st.sampled_from(["1s", "45m", "x", "0", 5]) | yaml_scalars,
        "retry": st.dictionaries(
            st.sampled_from(["max_attempts", "base", "factor", "max", "jitter", "bogus"]),
            yaml_scalars,
        ),
        "priority": st.dictionaries(
            st.sampled_from(["strategy", "queue_type"]),
            st.sampled_from(["queue", "lanes", "quorum", "classic", 3]),
        ),
        "scale": st.dictionaries(
            st.sampled_from(["min", "max", "backlog_per_worker", "activation", "stabilization"]),
            yaml_scalars,
        ),
        "dlq": st.dictionaries(st.sampled_from(["retention"]), yaml_scalars),
        "unknown": yaml_scalars,
    },
)
documents = st.fixed_dictionaries(
    {"groups": st.dictionaries(st.text(max_size=6), group_bodies | yaml_scalars, max_size=3)},
    optional={
        "namespace": yaml_scalars,
        "version": yaml_scalars,
        "defaults": st.dictionaries(st.text(max_size=8), yaml_scalars, max_size=2),
    },
)


@given(documents)
def test_any_document_gives_a_spec_or_a_topology_file_error(document):
    try:
        outcome = parse_topology(yaml.safe_dump(document), source="fuzz.yaml")
    except TopologyFileError as exc:
        outcome = exc
    if isinstance(outcome, TopologyFileError):
        assert outcome.problems
        assert all(isinstance(p, str) and ": " in p for p in outcome.problems)
    else:
        assert outcome.groups


def test_a_callbacks_group_is_built_in_unless_a_group_takes_callback_jobs():
    spec = parse_topology("groups: {x: {jobs: [x]}}\ndefaults: {prefetch: 4, concurrency: 2}")
    assert spec.groups["callbacks"].jobs == ("taskq.callback",)
    assert spec.groups["callbacks"].prefetch == 4  # the file's defaults apply to it too
    assert spec.groups["callbacks"].retry.max_attempts == 10
    own = parse_topology(
        "groups: {x: {jobs: [x]}, callbacks: {jobs: [taskq.callback], prefetch: 2, concurrency: 1}}"
    )
    assert own.groups["callbacks"].prefetch == 2
    renamed = parse_topology("groups: {hooks: {jobs: [taskq.callback]}}")
    assert set(renamed.groups) == {"hooks"}
