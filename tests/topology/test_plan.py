from topology.apply import Action, LiveState, make_plan
from topology.export import export_definitions


def live_from(definitions: dict) -> LiveState:
    queues = [{**q, "type": "classic"} for q in definitions["queues"]]
    return LiveState.from_management(definitions["exchanges"], queues, definitions["bindings"])


def test_empty_broker_plans_to_create_everything(topology):
    plan = make_plan(topology, LiveState((), (), (), {}))
    total = len(topology.exchanges) + len(topology.queues) + len(topology.bindings)
    assert len(plan.of(Action.CREATE)) == total
    assert plan.exit_code == 2
    assert not plan.in_sync


def test_broker_holding_the_export_is_in_sync(topology):
    plan = make_plan(topology, live_from(export_definitions(topology)))
    assert plan.in_sync
    assert plan.exit_code == 0


def test_changed_queue_argument_is_a_conflict_with_a_migration_hint(topology):
    definitions = export_definitions(topology)
    email = next(q for q in definitions["queues"] if q["name"] == "taskq.email")
    email["arguments"]["x-max-priority"] = 9
    plan = make_plan(topology, live_from(definitions))
    (conflict,) = plan.of(Action.CONFLICT)
    assert conflict.label == "queue taskq.email (classic)"
    assert conflict.detail == "x-max-priority: broker has 9, file wants 3"
    assert "--recreate taskq.email" in conflict.hint
    assert plan.exit_code == 3


def test_a_dlq_declared_without_a_length_limit_is_a_conflict_naming_both(topology):
    # A broker that holds the DLQs as they were declared before max_length existed.
    definitions = export_definitions(topology)
    for queue in definitions["queues"]:
        if queue["name"].endswith(".dlq"):
            del queue["arguments"]["x-max-length"], queue["arguments"]["x-overflow"]
    plan = make_plan(topology, live_from(definitions))
    conflicts = plan.of(Action.CONFLICT)
    assert {c.label for c in conflicts} == {
        f"queue {g.dead_letter_queue} (classic)" for g in topology.groups
    }
    assert conflicts[0].detail == (
        "x-max-length: broker has '(unset)', file wants 100000; "
        "x-overflow: broker has '(unset)', file wants 'reject-publish'"
    )
    assert f"--recreate {conflicts[0].obj.name}" in conflicts[0].hint
    assert plan.exit_code == 3


def test_changed_exchange_type_is_a_conflict(topology):
    definitions = export_definitions(topology)
    definitions["exchanges"][0]["type"] = "direct"
    (conflict,) = make_plan(topology, live_from(definitions)).of(Action.CONFLICT)
    assert conflict.detail == "type: broker has 'direct', file wants 'topic'"


def test_namespace_objects_the_file_no_longer_declares_are_extra(topology):
    definitions = export_definitions(topology)
    definitions["queues"].append(
        {"name": "taskq.old", "durable": True, "auto_delete": False, "arguments": {}}
    )
    definitions["queues"].append(
        {"name": "other.q", "durable": True, "auto_delete": False, "arguments": {}}
    )
    definitions["bindings"].append(
        {
            "source": "taskq.jobs",
            "destination": "taskq.old",
            "destination_type": "queue",
            "routing_key": "old",
        }
    )
    plan = make_plan(topology, live_from(definitions))
    extras = [i.label for i in plan.of(Action.EXTRA)]
    assert extras == ["queue taskq.old (classic)", "binding taskq.jobs -> taskq.old [old]"]
    assert plan.exit_code == 2


def test_queue_declared_without_a_type_argument_compares_by_its_real_type(topology):
    definitions = export_definitions(topology)
    for queue in definitions["queues"]:
        queue["arguments"].pop("x-queue-type")
    assert make_plan(topology, live_from(definitions)).in_sync
