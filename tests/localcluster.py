"""RabbitMQ nodes of the tests' own, started by ``deploy/local/cluster.sh``, to kill and restart at will."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers import scratch_vhost
from tests.tlsbroker import StartError

SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "local" / "cluster.sh"


@dataclass(frozen=True)
class LocalCluster:
    """Nodes 1..size on 127.0.0.1, AMQP on ``base + n``, management on ``10000 + base + n``."""

    size: int
    base: int
    directory: Path

    def amqp_url(self, node: int = 1, vhost: str = "/") -> str:
        """Return node ``node``'s AMQP URL for ``vhost`` (guest, from loopback)."""
        return f"amqp://guest:guest@127.0.0.1:{self.base + node}/{vhost.replace('/', '%2F')}"

    def management_url(self, node: int = 1) -> str:
        """Return node ``node``'s management API URL with the guest credentials."""
        return f"http://guest:guest@127.0.0.1:{10000 + self.base + node}"

    def run(self, *args: str) -> str:
        """Run ``cluster.sh ARGS`` against these nodes and return its output (StartError if it fails)."""
        env = {
            "TASKQ_CLUSTER_DIR": str(self.directory),
            "TASKQ_CLUSTER_BASE_PORT": str(self.base),
            "TASKQ_CLUSTER_SIZE": str(self.size),
        }
        done = subprocess.run(
            ["bash", str(SCRIPT), *args],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if done.returncode != 0:
            raise StartError(f"cluster.sh {' '.join(args)}: {(done.stderr or done.stdout).strip()}")
        return done.stdout

    def kill(self, node: int) -> None:
        """SIGKILL node ``node`` (a crash: its clients get no goodbye)."""
        self.run("kill", str(node))

    def pause(self, node: int) -> None:
        """SIGSTOP node ``node``'s Erlang VM: its peers still count it as up, and it answers nothing."""
        os.kill(self._pid(node), signal.SIGSTOP)

    def resume(self, node: int) -> None:
        """SIGCONT node ``node`` after ``pause``."""
        os.kill(self._pid(node), signal.SIGCONT)

    def _pid(self, node: int) -> int:
        return int((self.directory / str(node) / "node.pid").read_text().strip())

    def restart(self, node: int) -> None:
        """Start node ``node`` again; return once it accepts connections."""
        self.run("restart", str(node))

    @contextmanager
    def vhost(self) -> Iterator[str]:
        """Create a fresh vhost (the cluster shares it), yield its name, and delete it."""
        base = f"http://127.0.0.1:{10000 + self.base + 1}"
        with (
            httpx.Client(base_url=base, auth=("guest", "guest"), timeout=10) as http,
            scratch_vhost(http, "guest") as name,
        ):
            yield name


@contextmanager
def running_cluster(size: int) -> Iterator[LocalCluster]:
    """Start ``size`` clustered nodes of our own, yield them, then stop them and delete their data."""
    cluster = _started(size)
    try:
        yield cluster
    finally:
        with suppress(StartError):
            cluster.run("down")


def _started(size: int, tries: int = 2) -> LocalCluster:
    """Start the nodes on a random block of ports; on failure (a port taken meanwhile) once more elsewhere."""
    for attempt in range(tries):
        # Every port (AMQP base+n, management 10000 more, distribution 20000 more) stays below
        # the kernel's ephemeral range, where a client's outgoing connection could take one.
        base = random.randrange(10000, 12700, 10)
        cluster = LocalCluster(size, base, Path(tempfile.mkdtemp(prefix="taskq-cluster-")))
        try:
            cluster.run("up")
            return cluster
        except StartError:
            with suppress(StartError):
                cluster.run("down")
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")
