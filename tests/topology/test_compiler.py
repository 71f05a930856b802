import textwrap

from hypothesis import given
from hypothesis import strategies as st

from topology import names
from topology.compiled import Binding, CompiledTopology, Exchange, compile_topology
from topology.export import export_definitions
from topology.loader import load_topology, parse_topology, topology_path
from topology.settings import LocationSettings
from topology.spec import Priority


def compiled(text: str) -> CompiledTopology:
    return compile_topology(parse_topology(textwrap.dedent(text)))


def queue_args(topology: CompiledTopology, name: str) -> dict:
    return dict(next(q for q in topology.queues if q.name == name).arguments)


def test_default_topology_declares_the_exchanges_of_the_design(topology):
    assert set(topology.exchanges) == {
        Exchange("taskq.jobs", "topic"),
        Exchange("taskq.retry", "headers"),
        Exchange("taskq.dlx", "direct"),
        Exchange("taskq.events", "topic"),
    }


def test_work_queue_has_priorities_and_dead_letters_to_its_dlq(topology):
    assert queue_args(topology, "taskq.email") == {
        "x-queue-type": "classic",
        "x-max-priority": 3,
        "x-dead-letter-exchange": "taskq.dlx",
        "x-dead-letter-routing-key": "email",
    }
    assert queue_args(topology, "taskq.email.dlq") == {
        "x-queue-type": "classic",
        "x-message-ttl": 14 * 24 * 3600 * 1000,
        "x-max-length": 100_000,
        "x-overflow": "reject-publish",
    }
    assert Binding("taskq.dlx", "taskq.email.dlq", "queue", "email") in topology.bindings
    assert Binding("taskq.jobs", "taskq.email", "queue", "email.*") in topology.bindings


def test_every_work_queue_dead_letters_so_no_rejection_is_dropped(topology):
    for group in topology.groups:
        for queue in group.queue_names:
            assert queue_args(topology, queue)["x-dead-letter-exchange"] == "taskq.dlx"


def test_a_dlq_takes_its_groups_max_length_and_refuses_the_rest():
    topology = compiled(
        """
        groups:
          a: {jobs: [a], dlq: {max_length: 5}}
          b: {jobs: [b], dlq: {retention: null}}
        """
    )
    assert queue_args(topology, "taskq.a.dlq")["x-max-length"] == 5
    assert queue_args(topology, "taskq.a.dlq")["x-message-ttl"] == 14 * 24 * 3600 * 1000
    assert queue_args(topology, "taskq.b.dlq") == {
        "x-queue-type": "classic",
        "x-max-length": 100_000,
        "x-overflow": "reject-publish",
    }


def test_finished_jobs_are_kept_for_their_groups_retention():
    topology = compiled(
        """
        defaults: {retention: 2d}
        groups:
          a: {jobs: ["a.#"], retention: 1h, dlq: {retention: 3h}}
          b: {jobs: [b], dlq: {retention: 1h}}
          c: {jobs: [c], dlq: {retention: null}}
        """
    )
    assert topology.kept_for("a.x", dead=False) == 3600
    assert topology.kept_for("a.x", dead=True) == 3 * 3600  # as long as its dead letter
    assert topology.kept_for("b", dead=True) == 2 * 86400  # never less than the retention
    assert topology.kept_for("c", dead=True) == 2 * 86400
    # A type no group takes: the longest of them all, never shorter than any group's.
    assert topology.kept_for("unrouted", dead=False) == 2 * 86400


def test_the_default_retention_is_seven_days(topology):
    assert {g.spec.retention for g in topology.groups} == {7 * 86400 * 1000}


def test_delay_tiers_double_from_the_resolution_and_return_to_the_jobs_exchange(topology):
    assert [t.ms for t in topology.tiers][:4] == [1000, 2000, 4000, 8000]
    assert topology.tiers[-1].ms == 65_536_000
    tier = topology.tiers[2]
    assert tier.queue == "taskq.delay.4s"
    args = queue_args(topology, tier.queue)
    assert args == {
        "x-queue-type": "classic",
        "x-message-ttl": 4000,
        "x-dead-letter-exchange": "taskq.jobs",
    }
    # No dead-letter routing key: the message goes back with its own (the job type).
    assert "x-dead-letter-routing-key" not in args
    binding = next(b for b in topology.bindings if b.destination == tier.queue)
    assert dict(binding.arguments) == {"x-match": "all", names.DELAY_HEADER: "4s"}


def test_tier_for_picks_the_longest_tier_not_longer_than_the_delay(topology):
    assert topology.tier_for(0).ms == 1000
    assert topology.tier_for(1999).ms == 1000
    assert topology.tier_for(2000).ms == 2000
    assert topology.tier_for(10**12).ms == 65_536_000


def test_sub_second_resolution_names_tiers_in_milliseconds():
    topology = compiled("delays: {resolution: 250ms, longest: 1s}\ngroups: {a: {jobs: [a]}}")
    assert [t.queue for t in topology.tiers] == [
        "taskq.delay.250ms",
        "taskq.delay.500ms",
        "taskq.delay.1s",
    ]


def test_lanes_strategy_gives_one_queue_per_priority_behind_a_headers_exchange():
    topology = compiled(
        """
        namespace: acme
        groups:
          pay: {jobs: ["pay.#"], priority: {strategy: lanes, queue_type: quorum}}
        """
    )
    group = topology.group("pay")
    assert group.work_queues[Priority.URGENT] == "acme.pay.urgent"
    assert group.queue_names == (
        "acme.pay.urgent",
        "acme.pay.high",
        "acme.pay.medium",
        "acme.pay.low",
    )
    assert Exchange("acme.pay.lanes", "headers", internal=True) in topology.exchanges
    assert Binding("acme.jobs", "acme.pay.lanes", "exchange", "pay.#") in topology.bindings
    args = queue_args(topology, "acme.pay.urgent")
    assert args["x-queue-type"] == "quorum"
    assert args["x-dead-letter-strategy"] == "at-least-once"
    assert args["x-overflow"] == "reject-publish"
    lane = next(b for b in topology.bindings if b.destination == "acme.pay.low")
    assert dict(lane.arguments) == {"x-match": "all", names.PRIORITY_HEADER: "low"}
    assert args["x-delivery-limit"] == 20  # 2 x the default TASKQ_POISON_DELIVERIES + 10
    dlq = queue_args(topology, "acme.pay.dlq")
    assert dlq["x-queue-type"] == "quorum"  # replicated like the lanes
    assert dlq["x-overflow"] == "reject-publish"
    # The tiers hold the quorum group's retries: replicated too, dead-lettering at least once.
    tier = queue_args(topology, topology.tiers[0].queue)
    assert tier["x-queue-type"] == "quorum"
    assert tier["x-dead-letter-strategy"] == "at-least-once"
    assert tier["x-overflow"] == "reject-publish"
    assert "x-delivery-limit" not in tier  # nothing consumes a tier


def test_the_delivery_limit_of_quorum_lanes_follows_the_poison_bound():
    spec = parse_topology(
        "groups:\n  pay: {jobs: [pay], priority: {strategy: lanes, queue_type: quorum}}\n"
    )
    topology = compile_topology(spec, poison_deliveries=7)
    assert {
        queue_args(topology, name)["x-delivery-limit"] for name in topology.group("pay").queue_names
    } == {24}


def test_replicas_place_a_quorum_groups_queues_and_the_tiers_follow_the_widest_group():
    spec = parse_topology(
        "groups:\n"
        "  pay: {jobs: [pay], priority: {strategy: lanes, queue_type: quorum, replicas: 3}}\n"
        "  ship: {jobs: [ship], priority: {strategy: lanes, queue_type: quorum, replicas: 2}}\n"
        "  mail: {jobs: [mail]}\n"
    )
    topology = compile_topology(spec)
    size = "x-quorum-initial-group-size"
    pay, ship = topology.group("pay"), topology.group("ship")
    assert {queue_args(topology, q)[size] for q in (*pay.queue_names, pay.dead_letter_queue)} == {3}
    assert {queue_args(topology, q)[size] for q in (*ship.queue_names, ship.dead_letter_queue)} == {
        2
    }
    assert {queue_args(topology, t.queue)[size] for t in topology.tiers} == {3}
    assert size not in queue_args(topology, topology.group("mail").dead_letter_queue)
    # A quorum group without replicas is on every node, and so are the tiers then.
    spec = parse_topology(
        "groups:\n"
        "  pay: {jobs: [pay], priority: {strategy: lanes, queue_type: quorum, replicas: 3}}\n"
        "  ship: {jobs: [ship], priority: {strategy: lanes, queue_type: quorum}}\n"
    )
    topology = compile_topology(spec)
    assert all(size not in queue_args(topology, t.queue) for t in topology.tiers)
    assert all(size not in queue_args(topology, q) for q in topology.group("ship").queue_names)


def test_group_for_finds_the_one_group_of_a_job_type(topology):
    assert topology.group_for("email.welcome").name == "email"
    assert topology.group_for("github.push").name == "github"
    assert topology.group_for("unknown") is None


def test_compiled_topology_is_a_comparable_value(topology):
    again = compile_topology(load_topology(topology_path(LocationSettings())))
    assert again.exchanges == topology.exchanges
    assert again.queues == topology.queues
    assert again.bindings == topology.bindings


group_names = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True).filter(
    lambda n: n not in names.RESERVED_GROUPS
)


@given(
    st.dictionaries(group_names, st.booleans(), min_size=1, max_size=5),
    st.sampled_from(["taskq", "ns-1"]),
)
def test_generated_topologies_keep_the_invariants(groups: dict[str, bool], namespace: str):
    body = "\n".join(
        f"  {g}: {{jobs: ['{g}.#'], priority: {{strategy: {'lanes' if lanes else 'queue'}}}}}"
        for g, lanes in groups.items()
    )
    topology = compiled(f"namespace: {namespace}\ngroups:\n{body}\n")
    queue_names = [q.name for q in topology.queues]
    assert len(queue_names) == len(set(queue_names))
    for queue in topology.queues:
        assert queue.name.startswith(namespace + ".")
        assert len(queue.name.encode()) <= 255
        args = dict(queue.arguments)
        if queue.name.endswith(".dlq"):
            assert "x-dead-letter-exchange" not in args
        else:
            assert args.get("x-dead-letter-exchange") in (f"{namespace}.dlx", f"{namespace}.jobs")
    declared = {e.name for e in topology.exchanges} | set(queue_names)
    for binding in topology.bindings:
        assert binding.source in declared
        assert binding.destination in declared
    definitions = export_definitions(topology)
    assert len(definitions["queues"]) == len(topology.queues)
    assert len(definitions["bindings"]) == len(topology.bindings)
