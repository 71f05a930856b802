import asyncio
import sys
import time
from pathlib import Path

from taskctl.supervisor import ProcessSpec, Supervisor


def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


async def wait_for(predicate, within: float = 10.0) -> None:
    # The state lives in child processes and files, so there is no event to await: poll.
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_children_run_until_stop_then_drain_on_sigterm(tmp_path: Path):
    marker = tmp_path / "drained"
    code = (
        "import signal, sys, time, pathlib\n"
        "def bye(*_):\n"
        f"    pathlib.Path({str(marker)!r}).write_text('yes'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(0.1)\n"
    )
    said: list[str] = []
    supervisor = Supervisor([ProcessSpec("worker", python(code))], grace=5, say=said.append)
    task = asyncio.create_task(supervisor.run())
    await wait_for(lambda: any("started" in s for s in said))
    await asyncio.sleep(0.3)
    supervisor.stop()
    assert await task == 0
    assert marker.read_text() == "yes"


async def test_crashed_child_is_restarted(tmp_path: Path):
    counter = tmp_path / "starts"
    code = (
        "import pathlib, sys\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "p.write_text(str(int(p.read_text() or 0) + 1) if p.exists() else '1')\n"
        "sys.exit(3)\n"
    )
    said: list[str] = []
    supervisor = Supervisor([ProcessSpec("flaky", python(code))], max_backoff=0.2, say=said.append)
    task = asyncio.create_task(supervisor.run())
    # The child truncates the file before it writes: an empty read is a write under way.
    await wait_for(lambda: counter.exists() and int(counter.read_text() or 0) >= 3)
    supervisor.stop()
    assert await task == 0
    assert any("[flaky] exited with 3; restarting" in s for s in said)


async def test_a_killed_child_that_ran_well_is_replaced_at_once_every_time():
    code = "import time\nprint('up', flush=True)\ntime.sleep(60)\n"
    said: list[str] = []
    supervisor = Supervisor(
        [ProcessSpec("worker", python(code))], grace=1, healthy_after=0.3, say=said.append
    )
    task = asyncio.create_task(supervisor.run())

    def starts() -> int:
        return sum("started" in s for s in said)

    for kill in range(4):  # four kills a little apart, as an operator or the OOM killer would
        await wait_for(lambda n=kill + 1: starts() == n)
        await asyncio.sleep(0.4)
        victim = supervisor._children[0].process
        assert victim is not None
        killed = time.monotonic()
        victim.kill()
        await wait_for(lambda n=kill + 2: starts() == n, within=1.0)
        assert time.monotonic() - killed < 1.0
    supervisor.stop()
    assert await task == 0
    assert sum("restarting in 0.0s" in s for s in said) == 4


async def test_a_crash_loop_backs_off_longer_each_time():
    said: list[str] = []
    supervisor = Supervisor(
        [ProcessSpec("broken", python("raise SystemExit(2)"))], max_backoff=1.0, say=said.append
    )
    task = asyncio.create_task(supervisor.run())
    await wait_for(lambda: sum("restarting" in s for s in said) >= 3)
    supervisor.stop()
    assert await task == 0
    delays = [s.rsplit(" ", 1)[1] for s in said if "restarting" in s]
    assert delays[:3] == ["0.5s", "1.0s", "1.0s"]  # doubled, then held at max_backoff


async def test_child_that_ignores_sigterm_is_killed_after_the_grace_period():
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('x', flush=True)\ntime.sleep(60)\n"
    said: list[str] = []
    supervisor = Supervisor([ProcessSpec("stubborn", python(code))], grace=0.5, say=said.append)
    task = asyncio.create_task(supervisor.run())
    await wait_for(lambda: any("started" in s for s in said))
    await asyncio.sleep(0.3)
    supervisor.stop()
    async with asyncio.timeout(5):
        assert await task == 1


async def test_processes_are_started_and_retired_while_running(tmp_path: Path):
    # What the local autoscaler does: a retired child gets SIGTERM, drains, and is not restarted.
    code = (
        "import signal, sys, time, pathlib, os\n"
        "def bye(*_):\n"
        f"    pathlib.Path({str(tmp_path)!r}, 'drained-' + sys.argv[1]).write_text('yes'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        f"pathlib.Path({str(tmp_path)!r}, 'ready-' + sys.argv[1]).write_text('yes')\n"
        "while True: time.sleep(0.05)\n"
    )
    said: list[str] = []
    supervisor = Supervisor([], grace=5, say=said.append)
    task = asyncio.create_task(supervisor.run())
    for name in ("a", "b", "c"):
        supervisor.start(ProcessSpec(name, (*python(code), name)))
    # Ready once its SIGTERM handler is in place: a retire before that would kill it outright.
    await wait_for(lambda: all((tmp_path / f"ready-{n}").exists() for n in "abc"))
    supervisor.retire("c")
    await wait_for(lambda: any("[c] retired (exit 0)" in s for s in said))
    assert supervisor.names() == ["a", "b"]
    assert (tmp_path / "drained-c").exists()
    assert not (tmp_path / "drained-a").exists()
    await asyncio.sleep(0.3)
    assert sum("[c] started" in s for s in said) == 1  # not restarted
    supervisor.stop()
    assert await task == 0
    assert (tmp_path / "drained-a").exists()


async def test_the_local_scaler_names_workers_and_retires_the_newest():
    from taskctl.supervisor import LocalScaler

    said: list[str] = []
    supervisor = Supervisor([], grace=5, say=said.append)
    scaler = LocalScaler(supervisor, idle=lambda: 1.0)
    await scaler.scale("mail", 3)
    assert supervisor.names() == ["worker:mail", "worker:mail#2", "worker:mail#3"]
    await scaler.scale("mail", 1)
    assert supervisor.names() == ["worker:mail"]
    assert await scaler.current("mail") == 1
    await scaler.scale("mail", 2)
    assert supervisor.names() == ["worker:mail", "worker:mail#4"]  # names are never reused


async def test_the_local_scaler_adds_no_worker_while_the_cpus_are_busy():
    from taskctl.supervisor import LocalScaler

    idle = [0.5, 0.05, 0.05, 0.3]
    supervisor = Supervisor([], grace=5, say=lambda _: None)
    scaler = LocalScaler(supervisor, idle=lambda: idle.pop(0))
    await scaler.scale("mail", 2)
    await scaler.scale("mail", 8)  # 95 % busy: another process would only share the CPUs
    assert await scaler.current("mail") == 2
    await scaler.scale("mail", 1)  # retiring never waits for idle CPU
    assert await scaler.current("mail") == 1
    await scaler.scale("mail", 3)
    assert await scaler.current("mail") == 3


def test_idle_cpu_reads_the_share_of_idle_time_between_calls(tmp_path: Path):
    from taskctl.supervisor import idle_cpu

    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq
    stat.write_text("cpu  100 0 100 700 100 0 0\ncpu0 1 2 3\n")
    idle = idle_cpu(stat)
    stat.write_text("cpu  250 0 250 750 150 0 0\n")  # 300 busy, 100 idle of 400
    assert idle() == 0.25
    assert idle() == 1.0  # nothing elapsed
    assert 0.0 <= idle_cpu()() <= 1.0  # the real /proc/stat
