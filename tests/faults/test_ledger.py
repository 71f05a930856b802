"""The fault suite: a ledger of jobs through each fault, none lost, none run twice, and the time to recover.

Each test runs ``ledger.JOBS`` jobs (``TASKQ_TEST_LEDGER_JOBS``; 300 by default, 10,000 in the long
form of docs/reliability.md) and, with ``TASKQ_TEST_LEDGER_TABLE`` set to a file, appends its row
of the table there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.faultproxy import FaultProxy, fault_proxy
from tests.faults.ledger import (
    CLASSIC,
    HEARTBEAT,
    QUORUM,
    Stack,
    Tally,
    run_ledger,
    running_autoscaler,
    running_stack,
)
from tests.localcluster import LocalCluster
from tests.tlsbroker import listening
from topology.settings import BrokerSettings

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


def check(tally: Tally, fault: str, within: float, pause: float | None = None) -> None:
    """Record ``tally``'s row, then hold it to the suite's promises: nothing lost or run twice, back in time."""
    table = os.environ.get("TASKQ_TEST_LEDGER_TABLE")
    if table:
        with open(table, "a", encoding="utf-8") as out:
            out.write(tally.row(fault) + "\n")
    print(tally.row(fault))
    assert tally.never_ran == set(), f"{len(tally.never_ran)} acknowledged jobs never ran"
    assert tally.pending == set(), f"{len(tally.pending)} acknowledged jobs still pending"
    assert tally.unexplained == {}, f"effects repeated: {tally.unexplained}"
    assert tally.recovered_s is not None, "no job ran after the fault"
    assert tally.recovered_s < within, f"jobs ran again {tally.recovered_s:.2f} s after the fault"
    if pause is not None:
        assert tally.longest_pause_s < pause, f"no job ran for {tally.longest_pause_s:.2f} s"


def kill_worker_thrice(stack: Stack) -> float:
    for _ in range(3):
        stack.kill_worker()
        time.sleep(1.5)
    killed = time.time()
    stack.kill_worker()
    return killed


def test_worker_sigkills(vhost: BrokerSettings, tmp_path: Path):
    url = vhost.amqp_url.get_secret_value()
    with running_stack(tmp_path, url) as stack:
        tally = run_ledger(stack, kill_worker_thrice)
    assert stack.exits == [-9] * 4
    check(tally, "worker SIGKILL (x4, replaced at once)", within=2.0)


def stall_past_the_heartbeat(proxy: FaultProxy) -> float:
    proxy.stall()
    time.sleep(HEARTBEAT * 3 + 2)
    proxy.resume()
    return time.time()


def reset(proxy: FaultProxy) -> float:
    proxy.reset()
    return time.time()


def half_close(proxy: FaultProxy) -> float:
    proxy.half_close()
    return time.time()


def latency(proxy: FaultProxy) -> float:
    proxy.latency = 0.05
    time.sleep(5)
    proxy.latency = 0.0
    return time.time()


@contextmanager
def proxied(vhost: BrokerSettings) -> Iterator[tuple[FaultProxy, str]]:
    """Yield a fault proxy to the broker and the vhost's AMQP URL through it."""
    direct = vhost.amqp_url.get_secret_value()
    host_port = direct.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    with fault_proxy((host, int(port))) as proxy:
        yield proxy, direct.replace(f"@{host_port}/", f"@127.0.0.1:{proxy.port}/")


@pytest.mark.rabbitmq
@pytest.mark.parametrize(
    ("fault", "name", "within"),
    [
        pytest.param(reset, "every link reset (RST)", 3.0, id="reset"),
        pytest.param(half_close, "every link half-closed (FIN)", 3.0, id="half-closed"),
        pytest.param(
            stall_past_the_heartbeat, "every link stalled past the heartbeat", 5.0, id="stalled"
        ),
        pytest.param(latency, "50 ms added to every chunk for 5 s", 1.0, id="latency"),
    ],
)
def test_broken_links(
    vhost: BrokerSettings,
    tmp_path: Path,
    fault: Callable[[FaultProxy], float],
    name: str,
    within: float,
):
    # A publish whose confirm the stall swallowed holds its key until the repair sweep has
    # published the job again: 5 s here instead of the default 30 s keeps the ledger short.
    repair = {"TASKQ_REPAIR_AFTER": "5"}
    with (
        proxied(vhost) as (proxy, through),
        running_stack(tmp_path, through, more=repair) as stack,
    ):
        tally = run_ledger(stack, lambda _: fault(proxy))
        assert stack.worker_alive(), "the worker exited instead of reconnecting"
    check(tally, f"API and worker: {name}", within)


def restart_node(cluster: LocalCluster, node: int, down_s: float = 3.0) -> float:
    """Kill ``node``, start it again after ``down_s``; return when it accepts connections."""
    cluster.kill(node)
    time.sleep(down_s)
    with ThreadPoolExecutor(1) as pool:
        restarting = pool.submit(cluster.restart, node)
        while not listening(cluster.base + node, timeout=0.2):
            assert not restarting.done() or restarting.exception() is None
            time.sleep(0.05)
        back = time.time()
        restarting.result()
    return back


def test_broker_node_restart(own_cluster: LocalCluster, tmp_path: Path):
    with own_cluster.vhost() as vhost:
        url = own_cluster.amqp_url(1, vhost)
        more = {"TASKQ_MANAGEMENT_URL": own_cluster.management_url(1)}
        with running_stack(tmp_path, url, topology=CLASSIC, more=more) as stack:
            tally = run_ledger(stack, lambda _: restart_node(own_cluster, 1))
            assert stack.worker_alive(), "the worker exited instead of reconnecting"
    check(tally, "the broker node killed, restarted after 3 s (classic queues)", within=2.0)


def cluster_env(cluster: LocalCluster, first: int) -> dict[str, str]:
    """Return the settings that fail over from node ``first`` to the other nodes."""
    others = [n for n in range(1, cluster.size + 1) if n != first]
    return {
        "TASKQ_AMQP_FAILOVER": ",".join(f"127.0.0.1:{cluster.base + n}" for n in others),
        "TASKQ_MANAGEMENT_URL": cluster.management_url(first),
        "TASKQ_MANAGEMENT_FAILOVER": ",".join(
            f"http://127.0.0.1:{10000 + cluster.base + n}" for n in others
        ),
    }


def test_worker_partitioned_from_the_leader(own_cluster: LocalCluster, tmp_path: Path):
    with own_cluster.vhost() as vhost:
        url = own_cluster.amqp_url(1, vhost)
        node = own_cluster.base + 1
        with fault_proxy(("127.0.0.1", node)) as proxy:
            # The queues are declared through node 1, which leads them; the API reaches it
            # directly, the worker through the proxy only.
            through = url.replace(f":{node}/", f":{proxy.port}/")
            more = cluster_env(own_cluster, 1)

            def partition(_: Stack) -> float:
                proxy.stall()  # for good: the worker must leave node 1 on its own
                return time.time()

            with running_stack(tmp_path, url, through, topology=QUORUM, more=more) as stack:
                tally = run_ledger(stack, partition)
                assert stack.worker_alive(), "the worker exited instead of moving to another node"
    # aiormq gives a silent link up after (heartbeat + 1) x 3 s; the worker then connects
    # elsewhere, redeclares and consumes: about 1 s on a quiet machine, several on a loaded one.
    pause = (HEARTBEAT + 1) * 3 + 6
    check(tally, "cluster: the worker cut off from the queues' leader", within=pause, pause=pause)


def test_the_node_of_every_client_and_leader_killed(own_cluster: LocalCluster, tmp_path: Path):
    with own_cluster.vhost() as vhost:
        url = own_cluster.amqp_url(1, vhost)
        more = cluster_env(own_cluster, 1) | {"TASKQ_AUTOSCALE_INTERVAL": "1"}
        killed: list[float] = []

        def kill_node_1(_: Stack) -> float:
            own_cluster.kill(1)  # for the rest of the ledger: everyone must leave node 1
            killed.append(time.time())
            return killed[0]

        try:
            # The queues are declared through node 1, which leads every lane; the API, the
            # worker and the autoscaler (with a worker of its own) are connected to it, and
            # fail over to nodes 2 and 3.
            with (
                running_stack(tmp_path, url, topology=QUORUM, more=more) as stack,
                running_autoscaler(stack) as status,
            ):
                tally = run_ledger(stack, kill_node_1)
                assert stack.worker_alive(), "the worker exited instead of moving to another node"
                decided = decided_since(status, "soak", killed[0] + 1)
        finally:
            own_cluster.restart(1)
    check(
        tally,
        "cluster: the node of the API, the worker, the autoscaler and every lane's leader killed",
        10.0,
    )
    # The autoscaler reads the lanes through another node's management API once node 1 is gone
    # (the built-in callbacks group is classic: its queue went with node 1, and is reported so).
    assert decided["current"] >= 1, decided


def decided_since(status: Callable[[], dict[str, Any]], group: str, since: float) -> dict[str, Any]:
    """Return the autoscaler's first decision for ``group`` made after ``since`` from fresh signals."""
    deadline = time.time() + 20
    while True:
        (seen,) = (g for g in status()["groups"] if g["group"] == group)
        if seen["error"] is None and seen["decided_at"] > since:
            return dict(seen)
        assert time.time() < deadline, f"the autoscaler is not deciding for {group}: {seen}"
        time.sleep(0.5)
