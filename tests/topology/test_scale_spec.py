import textwrap

import pytest

from topology.errors import TopologyFileError
from topology.loader import parse_topology


def scale_of(text: str):
    return parse_topology(textwrap.dedent(text)).groups["a"].scale


def test_activation_and_stabilization_default_to_one_message_and_a_minute():
    scale = scale_of("groups: {a: {jobs: [a], scale: {min: 0, max: 8, backlog_per_worker: 500}}}")
    assert (scale.activation, scale.stabilization) == (1, 60_000)


def test_a_group_sets_activation_and_stabilization_and_keeps_the_default_bounds():
    scale = scale_of(
        """
        groups:
          a:
            jobs: [a]
            scale: {min: 0, activation: 20, stabilization: 5m}
        """
    )
    assert (scale.min, scale.max, scale.backlog_per_worker) == (0, 4, 500)
    assert (scale.activation, scale.stabilization) == (20, 300_000)


def test_defaults_carry_activation_and_stabilization_to_every_group():
    spec = parse_topology(
        "defaults: {scale: {activation: 0, stabilization: 0s}}\ngroups: {a: {jobs: [a]}}"
    )
    assert (spec.groups["a"].scale.activation, spec.groups["a"].scale.stabilization) == (0, 0)
    assert spec.groups["callbacks"].scale.stabilization == 0


def test_stabilization_serialises_back_to_a_duration():
    scale = scale_of("groups: {a: {jobs: [a], scale: {stabilization: 90s}}}")
    assert scale.model_dump(mode="json")["stabilization"] == "1m30s"


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("scale: {activation: -1}", "greater than or equal to 0"),
        ("scale: {activation: many}", "valid integer"),
        ("scale: {stabilization: soon}", "'soon' is not a duration"),
        ("scale: {stabilization: -5}", "is negative"),
        ("scale: {stabilization: 2h}", "stabilization 2h is above 1h"),
    ],
)
def test_bad_activation_or_stabilization_is_explained(setting: str, expected: str):
    with pytest.raises(TopologyFileError) as info:
        parse_topology(f"groups:\n  a:\n    jobs: [a]\n    {setting}\n", source="t.yaml")
    (message,) = info.value.problems
    assert message.startswith("groups.a.scale")
    assert expected in message
