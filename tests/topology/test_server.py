"""What a quorum group gets on each broker, and which brokers cannot hold one."""

import pytest

from tests.helpers import compiled
from topology.errors import BrokerUnsupportedError
from topology.server import BrokerServer, choices

QUORUM = compiled(
    """
    groups:
      mail: {jobs: [mail]}
      pay:
        jobs: ["pay.#"]
        priority: {strategy: lanes, queue_type: quorum}
    """
)
FLAGS = frozenset({"quorum_queue", "stream_queue", "classic_mirrored_queue_version"})
TIERS = "delay tiers: quorum, as the quorum groups are (a node's loss keeps their retries)"


@pytest.mark.parametrize("version", ["3.10.8", "3.13.7"])
def test_a_quorum_group_gets_four_lanes_when_the_broker_has_no_quorum_priorities(version):
    lines = choices(QUORUM, BrokerServer(version, FLAGS))
    assert lines == (
        f"group pay: quorum, 4 priority lanes (RabbitMQ {version} has no quorum priorities), "
        "delivery limit 20",
        TIERS,
    )


def test_on_4_0_the_lanes_keep_all_four_levels_where_the_broker_has_two():
    (line, _) = choices(QUORUM, BrokerServer("4.0.5", FLAGS))
    assert line == (
        "group pay: quorum, 4 priority lanes (RabbitMQ 4.0.5 keeps 2 native levels, the lanes "
        "keep all 4), delivery limit 20"
    )


def test_a_broker_older_than_3_10_is_refused_naming_its_version():
    with pytest.raises(BrokerUnsupportedError) as info:
        choices(QUORUM, BrokerServer("3.9.29", FLAGS))
    assert "group pay declares queue_type: quorum" in str(info.value)
    assert "RabbitMQ 3.9.29 is older than 3.10" in str(info.value)


@pytest.mark.parametrize("missing", ["quorum_queue", "stream_queue"])
def test_a_broker_with_a_quorum_flag_off_is_refused_naming_the_flag(missing):
    with pytest.raises(BrokerUnsupportedError) as info:
        choices(QUORUM, BrokerServer("3.10.8", FLAGS - {missing}))
    assert f"RabbitMQ 3.10.8 has feature flag {missing} off" in str(info.value)
    assert "rabbitmqctl enable_feature_flag all" in str(info.value)


def test_flags_this_user_may_not_read_do_not_refuse_a_recent_broker():
    assert choices(QUORUM, BrokerServer("3.12.1", None))[-1] == TIERS


def test_a_classic_topology_needs_no_choice_on_any_broker():
    classic = compiled("groups:\n  mail: {jobs: [mail]}\n")
    assert choices(classic, BrokerServer("3.8.0", frozenset())) == ()


@pytest.mark.parametrize(
    ("version", "release"),
    [("3.10.8", (3, 10, 8)), ("4.1.0-rc.1", (4, 1, 0)), ("3.13.7+1.g5c8c1d2", (3, 13, 7))],
)
def test_the_release_is_the_version_leading_numbers(version, release):
    assert BrokerServer(version, None).release == release
