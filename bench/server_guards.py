"""What the server guards cost: POST /jobs through the guarded protocol against uvicorn's own, same run.

Usage: .venv/bin/python bench/server_guards.py [--seconds 6] [--rounds 3] [--connections 32]

Needs wrk and RabbitMQ. In a scratch vhost with the default topology and a SQLite store, the
whole API (as ``taskctl serve`` assembles it) runs twice as its own uvicorn process: once with
``GuardedHttp`` (head and body deadlines, header, head and URL limits) and once with
uvicorn's plain httptools protocol. Each round loads both in turn with wrk (the order
reversed every other round); the ratio of the medians is the guards' cost.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
LUA = """wrk.method = "POST"
wrk.body = '{"type":"email","payload":{"to":"user@example.com"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


def serve(protocol: str) -> None:
    """Run the API with the guarded or the plain protocol (a child process of the bench)."""
    import uvicorn

    from producers.api.guards import server_config
    from taskctl.assembly import api_app
    from topology.settings import load_settings

    settings = load_settings()
    config = server_config(api_app(settings), settings.api)
    if protocol == "plain":
        config.http = "httptools"
    uvicorn.Server(config).run()


def main() -> None:
    """Load both servers in interleaved rounds and print jobs/s and the ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    vhost = f"taskq-bench-guards-{uuid.uuid4().hex[:8]}"
    mgmt = httpx.Client(base_url="http://127.0.0.1:15672", auth=("guest", "guest"))
    mgmt.put(f"/api/vhosts/{vhost}").raise_for_status()
    mgmt.put(
        f"/api/permissions/{vhost}/guest", json={"configure": ".*", "write": ".*", "read": ".*"}
    )
    data = Path(tempfile.mkdtemp())
    base_env = {
        **os.environ,
        "TASKQ_AMQP_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
        "TASKQ_STORE_URL": f"sqlite:///{data}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{data}/blobs",
        "TASKQ_DATA_DIR": str(data),
        "TASKQ_RATE_LIMIT": "0",
        "TASKQ_LOG_LEVEL": "WARNING",
    }
    taskctl = [sys.executable, "-c", "from taskctl.cli import main; main()"]
    servers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        subprocess.run(
            [*taskctl, "topology", "apply"], env=base_env, check=True, capture_output=True
        )
        made = subprocess.run(
            [*taskctl, "keys", "create", "bench", "--json"],
            env=base_env,
            check=True,
            capture_output=True,
        )
        key = re.search(rb'"key":\s*"([^"]+)"', made.stdout).group(1).decode()  # type: ignore[union-attr]
        lua = data / "post.lua"
        lua.write_text(LUA % key)
        ports = {"guarded": 18711, "plain": 18712}
        for name, port in ports.items():
            env = {**base_env, "TASKQ_PORT": str(port)}
            servers[name] = subprocess.Popen(
                [sys.executable, __file__, "--serve", name], env=env, cwd=ROOT
            )
        for port in ports.values():
            _wait(f"http://127.0.0.1:{port}/readyz")
        rates: dict[str, list[float]] = {name: [] for name in ports}
        for round_ in range(args.rounds):
            order = list(ports) if round_ % 2 == 0 else list(reversed(ports))
            for name in order:
                rates[name].append(_wrk(ports[name], lua, args.seconds, args.connections))
                mgmt.delete(f"/api/queues/{vhost}/taskq.email/contents")
        guarded, plain = statistics.median(rates["guarded"]), statistics.median(rates["plain"])
        for name, values in rates.items():
            print(
                f"POST /jobs, {name:8} protocol: {statistics.median(values):8.0f} jobs/s  ({min(values):.0f}-{max(values):.0f})"
            )
        print(f"guarded / plain: {guarded / plain:.3f}")
    finally:
        for process in servers.values():
            process.terminate()
            process.wait(timeout=30)
        mgmt.delete(f"/api/vhosts/{vhost}")


def _wrk(port: int, lua: Path, seconds: int, connections: int) -> float:
    done = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(lua),
            f"http://127.0.0.1:{port}/jobs",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    assert non_2xx is None, done.stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))  # type: ignore[union-attr]


def _wait(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} never became ready")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        main()
