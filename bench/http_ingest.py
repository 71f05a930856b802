"""HTTP ingest throughput: taskq's POST /jobs against a minimal validate-and-publish endpoint.

Usage: .venv/bin/python bench/http_ingest.py [--seconds 10] [--connections 32] [--batch 100]
       [--auth-rounds 5] [--auth-seconds 5]

Needs wrk (Debian package `wrk`), RabbitMQ with the management API and PostgreSQL on
127.0.0.1:5432. In one run, in a scratch vhost with the default topology applied, it starts each
server as its own uvicorn process (one worker), loads it with wrk for the same time and
connections, and prints requests/s and jobs/s:

- ``minimal endpoint`` (the baseline, bench/minimal_api.py): pydantic validation + a confirmed
  aio-pika publish, nothing else;
- ``taskq POST /jobs`` with the SQLite store and with the PostgreSQL store: the full path
  (validation, job record, envelope, confirmed publish, status event);
- ``taskq POST /jobs/batch`` (``--batch`` jobs per request, SQLite and PostgreSQL);
- the auth-on column: ``POST /jobs`` (SQLite) with API-key auth (the product, a key in every
  request) against the same app with its auth gate taken out (bench/auth_off_api.py), in
  ``--auth-rounds`` interleaved rounds: median requests/s (min-max), the server's CPU
  microseconds per request, and the on/off ratios.

Every taskq server gets an API key (sent by wrk) and a rate limit far above what wrk can
send, so the limiter's cost is measured but it never refuses. Queues are purged between
runs so the broker's state is alike for every server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import orjson

from jobstore.factory import open_store
from producers.auth.api_keys import make_key
from producers.auth.scopes import Scope
from topology.apply import apply_topology
from topology.compiler import compile_topology
from topology.loader import load_topology
from topology.management import ManagementClient
from topology.settings import BrokerSettings, load_settings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{auth}wrk.body = [[{body}]]
"""
UNLIMITED = {"TASKQ_RATE_LIMIT": "100000000", "TASKQ_RATE_BURST": "100000000"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} never became ready")


def wrk(
    url: str, body: bytes, seconds: int, connections: int, key: str | None = None
) -> tuple[float, int, int]:
    """Return (requests/s, non-2xx responses, socket errors) of one wrk run posting ``body``."""
    auth = f'wrk.headers["Authorization"] = "Bearer {key}"\n' if key else ""
    return run_wrk(url, LUA.format(body=body.decode(), auth=auth), seconds, connections)


def run_wrk(url: str, script: str, seconds: int, connections: int) -> tuple[float, int, int]:
    """Return (requests/s, non-2xx responses, socket errors) of one wrk run of a Lua ``script``."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    try:
        done = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{connections}",
                f"-d{seconds}s",
                "--timeout",
                "10s",
                "-s",
                file.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(file.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", done.stdout
    )
    return rate, int(bad.group(1)) if bad else 0, sum(map(int, errors.groups())) if errors else 0


def serve(argv: list[str], env: dict[str, str], ready_url: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_ready(ready_url, process)
    return process


async def new_key(store_url: str) -> str:
    """Store a fresh all-scopes API key in the job store at ``store_url``; return its text."""
    store = open_store(store_url)
    try:
        await store.migrate()
        key = make_key(name="bench", tenant="default", scopes=tuple(Scope))
        await store.create_api_key(key.record)
    finally:
        await store.close()
    return key.token


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


async def purge(management: ManagementClient, vhost: str) -> None:
    for queue in await management.queues(vhost):
        if queue["name"].startswith("taskq."):
            await management.purge_queue(vhost, queue["name"])


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--auth-rounds", type=int, default=5)
    parser.add_argument("--auth-seconds", type=int, default=5)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    opts = parser.parse_args()

    base = load_settings(BrokerSettings)
    vhost = f"taskq-bench-{uuid.uuid4().hex[:8]}"
    database = f"taskq_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(opts.postgres)
    await admin.execute(f'CREATE DATABASE "{database}"')
    work = Path(tempfile.mkdtemp(prefix="taskq-bench-"))
    async with ManagementClient(base) as management:
        await management.create_vhost(vhost)
        settings = base.with_vhost(vhost)
        try:
            await apply_topology(compile_topology(load_topology()), settings)
            await run_all(
                opts,
                settings,
                management,
                vhost,
                work,
                opts.postgres.rsplit("/", 1)[0] + f"/{database}",
            )
        finally:
            await management.delete_vhost(vhost)
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.close()


async def run_all(opts, settings, management, vhost, work: Path, pg_dsn: str) -> None:
    amqp = settings.amqp_url.get_secret_value()
    single = orjson.dumps(
        {"type": "email", "payload": {"to": "user@example.com", "template": "welcome"}}
    )
    batch = orjson.dumps({"jobs": [orjson.loads(single)] * opts.batch})
    rows: list[tuple[str, float, float, int]] = []

    port = free_port()
    process = serve(
        [sys.executable, str(HERE / "minimal_api.py"), str(port), amqp],
        {},
        f"http://127.0.0.1:{port}/docs",
    )
    try:
        rate, bad, errors = wrk(
            f"http://127.0.0.1:{port}/jobs", single, opts.seconds, opts.connections
        )
        rows.append(("minimal endpoint", rate, rate, bad + errors))
    finally:
        stop(process)
    await purge(management, vhost)

    for store_name, store_url in (
        ("SQLite", f"sqlite:///{work}/jobs.sqlite3"),
        ("PostgreSQL", pg_dsn),
    ):
        port = free_port()
        env = {
            "TASKQ_AMQP_URL": amqp,
            "TASKQ_PORT": str(port),
            "TASKQ_STORE_URL": store_url,
            "TASKQ_BLOB_URL": f"file:{work}/blobs",
            **UNLIMITED,
        }
        key = await new_key(store_url)
        process = serve(
            [sys.executable, "-m", "producers.api"], env, f"http://127.0.0.1:{port}/readyz"
        )
        try:
            rate, bad, errors = wrk(
                f"http://127.0.0.1:{port}/jobs", single, opts.seconds, opts.connections, key
            )
            rows.append((f"taskq POST /jobs ({store_name})", rate, rate, bad + errors))
            await purge(management, vhost)
            rate, bad, errors = wrk(
                f"http://127.0.0.1:{port}/jobs/batch",
                batch,
                opts.seconds,
                max(opts.connections // 4, 2),
                key,
            )
            rows.append(
                (
                    f"taskq POST /jobs/batch x{opts.batch} ({store_name})",
                    rate,
                    rate * opts.batch,
                    bad + errors,
                )
            )
        finally:
            stop(process)
        await purge(management, vhost)

    baseline = rows[0][2]
    print(
        f"wrk {opts.seconds}s, {opts.connections} connections (batch runs: {max(opts.connections // 4, 2)}), one uvicorn worker each"
    )
    print(f"{'server':42} {'req/s':>9} {'jobs/s':>9} {'vs minimal':>11} {'errors':>7}")
    for name, rate, jobs, errors in rows:
        print(f"{name:42} {rate:9.0f} {jobs:9.0f} {jobs / baseline:11.2f} {errors:7d}")
    await auth_column(opts, amqp, management, vhost, work, single)


async def auth_column(opts, amqp: str, management, vhost: str, work: Path, body: bytes) -> None:
    """Run POST /jobs with and without API-key auth in interleaved rounds; print the ratios."""
    servers = {}
    for name, argv in (
        ("auth off", [sys.executable, str(HERE / "auth_off_api.py")]),
        ("auth on", [sys.executable, "-m", "producers.api"]),
    ):
        port = free_port()
        store_url = f"sqlite:///{work}/{name.replace(' ', '_')}.sqlite3"
        env = {
            "TASKQ_AMQP_URL": amqp,
            "TASKQ_PORT": str(port),
            "TASKQ_STORE_URL": store_url,
            "TASKQ_BLOB_URL": f"file:{work}/blobs",
            **UNLIMITED,
        }
        key = await new_key(store_url) if name == "auth on" else None
        servers[name] = (serve(argv, env, f"http://127.0.0.1:{port}/readyz"), port, key)
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in servers}
    try:
        for round_no in range(opts.auth_rounds):
            order = list(servers) if round_no % 2 == 0 else list(reversed(servers))
            for name in order:
                process, port, key = servers[name]
                before = cpu_seconds(process.pid)
                rate, bad, errors = wrk(
                    f"http://127.0.0.1:{port}/jobs",
                    body,
                    opts.auth_seconds,
                    opts.connections,
                    key,
                )
                used = cpu_seconds(process.pid) - before
                results[name].append(
                    (rate, used * 1e6 / max(1, rate * opts.auth_seconds), bad + errors)
                )
                await purge(management, vhost)
    finally:
        for process, _, _ in servers.values():
            stop(process)
    print()
    print(
        f"auth-on column: POST /jobs (SQLite), {opts.auth_rounds} interleaved rounds of "
        f"{opts.auth_seconds}s, {opts.connections} connections; median (min-max)"
    )
    print(f"{'server':10} {'req/s':>24} {'CPU us/req':>22} {'errors':>7}")
    medians = {}
    for name, runs in results.items():
        rates = [r for r, _, _ in runs]
        cpus = [c for _, c, _ in runs]
        medians[name] = (statistics.median(rates), statistics.median(cpus))
        print(
            f"{name:10} {medians[name][0]:8.0f} ({min(rates):6.0f}-{max(rates):6.0f})"
            f" {medians[name][1]:8.1f} ({min(cpus):5.1f}-{max(cpus):5.1f})"
            f" {sum(e for _, _, e in runs):7d}"
        )
    off, on = medians["auth off"], medians["auth on"]
    print(
        f"auth on / auth off: throughput {on[0] / off[0]:.3f}, CPU per request {on[1] / off[1]:.3f}"
        f" (+{on[1] - off[1]:.1f} us)"
    )


if __name__ == "__main__":
    asyncio.run(main())
