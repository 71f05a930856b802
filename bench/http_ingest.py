"""HTTP ingest: taskq's POST /jobs and /jobs/batch against their raw baselines, same run.

Usage: .venv/bin/python bench/http_ingest.py [--seconds 8] [--rounds 3] [--connections 32]
       [--batch 500] [--postgres URL] [--stores sqlite,postgres] [--auth-rounds 5] [--auth-seconds 5]
       [--sealed]

Needs wrk (Debian package `wrk`), RabbitMQ with the management API, and PostgreSQL on
127.0.0.1:5432 for the PostgreSQL rows. In a scratch vhost holding the default topology, every
server runs as its own uvicorn process (one worker) for the whole run, and each round loads
each of them in turn with wrk (the order reversed every other round), purging the queues
after every load, so drift on a shared machine hits them alike. Each row gives the median
jobs/s with its min-max, the server process's CPU per job, and the ratio to its baseline.

Single jobs (``--connections`` concurrent requests):

- ``minimal endpoint`` (THE baseline, bench/minimal_api.py): pydantic validation and a
  confirmed aio-pika publish per request, nothing else;
- ``taskq POST /jobs (<store>)``: the whole path: validation, job record in the store,
  envelope, confirmed publish, job view; with ``--sealed`` also each store's server with
  ``TASKQ_DATA_KEYS`` set (the payload sealed with AES-256-GCM before it is stored and sent).

Batches (one request or window in flight at a time):

- ``aio-pika, window of --batch`` (THE baseline, a process of its own): a plain aio-pika
  publisher that builds ``--batch`` messages and awaits their confirms together, in a loop;
- ``taskq POST /jobs/batch x--batch (<store>)``: one request of ``--batch`` jobs at a time.

Every taskq server gets an API key (sent by wrk) and a rate limit far above what wrk can send,
so the credential check and the limiter are measured but never refuse. Last, the auth-on
column: ``POST /jobs`` (SQLite) with API-key auth against the same app with its auth gate
taken out (bench/auth_off_api.py), in ``--auth-rounds`` interleaved rounds.
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
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import orjson

from jobstore.model import open_store
from producers.auth.api_keys import make_key
from producers.auth.principal import Scope
from tests.broker import TestsManagementClient
from topology.apply import apply_topology
from topology.compiled import compile_topology
from topology.loader import load_topology
from topology.sealing import new_key as data_key
from topology.settings import load_settings

HERE = Path(__file__).resolve().parent
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{auth}wrk.body = [[{body}]]
"""
UNLIMITED = {"TASKQ_RATE_LIMIT": "100000000", "TASKQ_RATE_BURST": "100000000"}
JOB = {"type": "email", "payload": {"to": "user@example.com", "template": "welcome"}}
TICKS = os.sysconf("SC_CLK_TCK")


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
    threads = min(2, connections)
    try:
        done = subprocess.run(
            [
                *("wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"),
                *("-s", file.name, url),
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


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time a process (and its threads) used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def purge(management: TestsManagementClient, vhost: str) -> None:
    for queue in await management.listing(vhost, "queues"):
        if queue["name"].startswith("taskq."):
            await management.purge_queue(vhost, queue["name"])


@dataclass
class Load:
    """What one timed load did: its rate, its failures, and the CPU it cost per job."""

    jobs_per_s: float
    failed: int
    cpu_us: float


@dataclass
class Variant:
    name: str
    load: Callable[[], Load]
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)


def http_variant(
    name: str,
    url: str,
    server: subprocess.Popen[bytes],
    body: bytes,
    opts: argparse.Namespace,
    *,
    connections: int,
    jobs: int = 1,
    key: str | None = None,
) -> Variant:
    """Load ``url`` with wrk; the CPU is the server process's."""

    def load() -> Load:
        before = cpu_seconds(server.pid)
        rate, bad, errors = wrk(url, body, opts.seconds, connections, key)
        used = cpu_seconds(server.pid) - before
        return Load(rate * jobs, bad + errors, used / (rate * jobs * opts.seconds) * 1e6)

    return Variant(name, load)


def publisher_variant(name: str, amqp: str, opts: argparse.Namespace) -> Variant:
    """Run the raw windowed publisher as a process of its own; it reports its own CPU."""

    def load() -> Load:
        argv = [
            sys.executable,
            __file__,
            "--raw-publisher",
            amqp,
            str(opts.seconds),
            str(opts.batch),
        ]
        done = subprocess.run(argv, capture_output=True, check=True, timeout=opts.seconds + 60)
        rate, cpu_us = orjson.loads(done.stdout)
        return Load(rate, 0, cpu_us)

    return Variant(name, load)


def measure(variants: list[Variant], rounds: int, after: Callable[[], None]) -> None:
    for round_no in range(rounds):
        for v in variants if round_no % 2 == 0 else reversed(variants):
            done = v.load()
            if done.failed:
                raise RuntimeError(f"{v.name}: {done.failed} requests failed")
            v.rates.append(done.jobs_per_s)
            v.cpu_us.append(done.cpu_us)
            after()


def table(title: str, variants: list[Variant]) -> None:
    baseline = statistics.median(variants[0].rates)
    print(f"\n{title}")
    print(f"{'variant':44} {'jobs/s (min-max)':>26} {'CPU µs/job':>11} {'ratio':>6}")
    for v in variants:
        median = statistics.median(v.rates)
        spread = f"{median:,.0f} ({min(v.rates):,.0f}-{max(v.rates):,.0f})"
        cpu = statistics.median(v.cpu_us)
        print(f"{v.name:44} {spread:>26} {cpu:11.0f} {median / baseline:6.2f}")


@contextmanager
def servers(
    opts: argparse.Namespace,
    amqp: str,
    work: Path,
    stores: dict[str, tuple[str, str, dict[str, str]]],
) -> Iterator[tuple[list[Variant], list[Variant]]]:
    """Start every server; ``stores`` maps a store's name to its URL, an API key in it and more settings."""
    single = orjson.dumps(JOB)
    batch = orjson.dumps({"jobs": [JOB] * opts.batch})
    with ExitStack() as stack:
        port = free_port()
        minimal = serve(
            [sys.executable, str(HERE / "minimal_api.py"), str(port), amqp],
            {},
            f"http://127.0.0.1:{port}/docs",
        )
        stack.callback(stop, minimal)
        singles = [
            http_variant(
                "minimal endpoint",
                f"http://127.0.0.1:{port}/jobs",
                minimal,
                single,
                opts,
                connections=opts.connections,
            )
        ]
        batches = [publisher_variant(f"aio-pika, window of {opts.batch}", amqp, opts)]
        for store_name, (store_url, key, extra) in stores.items():
            port = free_port()
            env = {
                "TASKQ_AMQP_URL": amqp,
                "TASKQ_PORT": str(port),
                "TASKQ_STORE_URL": store_url,
                "TASKQ_BLOB_URL": f"file:{work}/blobs",
                "TASKQ_LOG_LEVEL": "WARNING",
                **UNLIMITED,
                **extra,
            }
            server = serve(
                [sys.executable, "-m", "taskctl", "serve"], env, f"http://127.0.0.1:{port}/readyz"
            )
            stack.callback(stop, server)
            singles.append(
                http_variant(
                    f"taskq POST /jobs ({store_name})",
                    f"http://127.0.0.1:{port}/jobs",
                    server,
                    single,
                    opts,
                    connections=opts.connections,
                    key=key,
                )
            )
            batches.append(
                http_variant(
                    f"taskq POST /jobs/batch x{opts.batch} ({store_name})",
                    f"http://127.0.0.1:{port}/jobs/batch",
                    server,
                    batch,
                    opts,
                    connections=opts.batch_connections,
                    jobs=opts.batch,
                    key=key,
                )
            )
        yield singles, batches


async def main(opts: argparse.Namespace) -> None:
    base = load_settings().broker
    vhost = f"taskq-bench-{uuid.uuid4().hex[:8]}"
    database = f"taskq_bench_{uuid.uuid4().hex[:8]}"
    use_pg = "postgres" in opts.stores.split(",")
    admin = await asyncpg.connect(opts.postgres) if use_pg else None
    if admin is not None:
        await admin.execute(f'CREATE DATABASE "{database}"')
    pg_dsn = opts.postgres.rsplit("/", 1)[0] + f"/{database}" if use_pg else None
    work = Path(tempfile.mkdtemp(prefix="taskq-bench-"))
    async with TestsManagementClient(base) as management:
        await management.create_vhost(vhost)
        settings = base.with_vhost(vhost)
        amqp = settings.amqp_url.get_secret_value()
        try:
            await apply_topology(compile_topology(load_topology()), settings)
            loop = asyncio.get_running_loop()

            def after() -> None:
                asyncio.run_coroutine_threadsafe(purge(management, vhost), loop).result()

            urls = {"SQLite": f"sqlite:///{work}/jobs.sqlite3"}
            if pg_dsn is not None:
                urls["PostgreSQL"] = pg_dsn
            stores = {name: (url, await new_key(url), {}) for name, url in urls.items()}
            if opts.sealed:  # the same store kinds, each a server with a data key of its own
                sealed = {"TASKQ_DATA_KEYS": f"bench:{data_key()}"}
                urls = {"SQLite, sealed": f"sqlite:///{work}/sealed.sqlite3"} | {
                    f"{name}, sealed": url for name, url in urls.items() if name != "SQLite"
                }
                stores |= {name: (url, await new_key(url), sealed) for name, url in urls.items()}
            with servers(opts, amqp, work, stores) as (singles, batches):
                await asyncio.to_thread(measure, singles + batches, opts.rounds, after)
            print(
                f"wrk {opts.seconds} s x {opts.rounds} interleaved rounds; one uvicorn worker "
                f"per server; load average {os.getloadavg()[0]:.2f}"
            )
            table(f"Single jobs, {opts.connections} connections", singles)
            table(f"Batches of {opts.batch}, {opts.batch_connections} in flight", batches)
            if opts.auth_rounds:
                await auth_column(opts, amqp, management, vhost, work, orjson.dumps(JOB))
        finally:
            await management.delete_vhost(vhost)
            if admin is not None:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                await admin.close()


async def auth_column(opts, amqp: str, management, vhost: str, work: Path, body: bytes) -> None:
    """Run POST /jobs with and without API-key auth in interleaved rounds; print the ratios."""
    servers = {}
    for name, argv in (
        ("auth off", [sys.executable, str(HERE / "auth_off_api.py")]),
        ("auth on", [sys.executable, "-m", "taskctl", "serve"]),
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


async def raw_publisher(amqp: str, seconds: float, window: int) -> None:
    """Publish windows of ``window`` confirmed messages for ``seconds``; print [jobs/s, CPU µs/job]."""
    import aio_pika

    connection = await aio_pika.connect_robust(amqp)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await channel.get_exchange("taskq.jobs", ensure=False)

    def message() -> aio_pika.Message:
        job_id = str(uuid.uuid4())
        body = orjson.dumps({"id": job_id, **JOB})
        return aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=job_id,
        )

    sent = 0
    cpu, started = time.process_time(), time.perf_counter()
    while time.perf_counter() - started < seconds:
        await asyncio.gather(
            *(exchange.publish(message(), "email", mandatory=True) for _ in range(window))
        )
        sent += window
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    await connection.close()
    print(orjson.dumps([sent / wall, cpu / sent * 1e6]).decode())


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--raw-publisher":
        asyncio.run(raw_publisher(sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--batch-connections", type=int, default=1)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--auth-rounds", type=int, default=5)
    parser.add_argument(
        "--sealed", action="store_true", help="add each store's server with payloads sealed at rest"
    )
    parser.add_argument("--auth-seconds", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
