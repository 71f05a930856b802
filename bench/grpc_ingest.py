"""gRPC ingest: taskq's gRPC Submit against POST /jobs on the same server process, same run.

Usage: .venv/bin/python bench/grpc_ingest.py [--seconds 4] [--rounds 3] [--connections 32]
       [--streams 1,4] [--batch 500] [--no-python-client] [--noop-h2load] [--profile DIR]

Needs wrk and h2load (Debian packages `wrk` and `nghttp2-client`) and RabbitMQ with the
management API. In a scratch vhost holding the default topology, one ``taskctl serve`` process
(one uvicorn worker, SQLite store) serves the HTTP API and, with ``TASKQ_GRPC=true``, the gRPC
job API beside it, for the whole run: both doors share its submitter, store, publisher and
CPU. Each round loads each door in turn (the order reversed every other round), purging the
queues after every load:

- ``POST /jobs`` (THE baseline): wrk, ``--connections`` connections, the API key sent;
- ``gRPC Submit (h2load, CxM)``: h2load, a C load generator like wrk, ``C`` connections of
  ``M`` concurrent calls each (``--streams`` lists the ``M``; ``C`` x ``M`` =
  ``--connections`` calls in flight; h2load does not open a new connection after a GOAWAY,
  and the server retires a connection after 3,840 calls, so each connection must make
  fewer calls than that in ``--seconds``), each call an HTTP/2 POST of the framed
  ``SubmitRequest`` with ``content-type: application/grpc`` and the API key. h2load counts
  HTTP 200, which a gRPC call answers even when it fails, so before the run one call made with
  nghttp must end with ``grpc-status: 0``, and after each load the jobs the store gained must
  match the calls answered;
- ``gRPC Submit (Python client)``: a client process of its own (grpc.aio, one channel)
  keeping ``--connections`` calls in flight; it takes about 290 µs of CPU per call from the
  cores the server shares, so its rate understates the server's;
- ``gRPC no-op servicer`` (for reference, a process of its own): a server built as taskq's
  (its gRPC layer on uvicorn's HTTP/2) whose ``Submit`` answers an empty ``SubmitResponse``
  at once, loaded by the Python client (or by h2load, 32 connections of one call, with
  ``--noop-h2load``): what the gRPC server itself costs per call, before any of taskq's work;

and batches of ``--batch`` jobs, one request in flight: ``POST /jobs/batch`` (THE baseline,
wrk) against ``gRPC SubmitBatch`` (the Python client process).

Each row gives the median jobs/s with its min-max, the server process's CPU per job, and the
ratio to the baseline; a last table gives the h2load and wrk rows' CPU per job on the server's
event-loop thread alone (what the process spends beside it is other threads': SQLite's,
the logger's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import orjson
from http_ingest import (
    JOB,
    TICKS,
    UNLIMITED,
    Load,
    Variant,
    cpu_seconds,
    free_port,
    measure,
    new_key,
    purge,
    serve,
    stop,
    table,
    wrk,
)

from producers.grpc_api.v1 import jobs_pb2 as pb
from producers.grpc_api.v1 import jobs_pb2_grpc
from tests.broker import TestsManagementClient
from topology.apply import apply_topology
from topology.compiled import compile_topology
from topology.loader import load_topology
from topology.settings import load_settings


def grpc_variant(
    address: str,
    key: str,
    server: subprocess.Popen[bytes],
    opts: argparse.Namespace,
    *,
    batch: int = 0,
    name: str = "",
) -> Variant:
    """Load the gRPC door from a client process (``batch``: SubmitBatch); the CPU is the server's."""
    in_flight = 1 if batch else opts.connections

    def load() -> Load:
        argv = [
            sys.executable,
            __file__,
            "--client",
            address,
            key,
            str(opts.seconds),
            str(in_flight),
            str(batch),
        ]
        before = cpu_seconds(server.pid)
        done = subprocess.run(argv, capture_output=True, check=True, timeout=opts.seconds + 60)
        used = cpu_seconds(server.pid) - before
        rate, failed = orjson.loads(done.stdout)
        if failed:
            print(done.stderr.decode(), file=sys.stderr)
        return Load(rate, failed, used / (rate * opts.seconds) * 1e6)

    return Variant(
        name or (f"gRPC SubmitBatch x{batch}" if batch else "gRPC Submit (Python client)"), load
    )


def grpc_frame(message: bytes) -> bytes:
    """Return ``message`` framed as a gRPC request body: uncompressed flag, 4-byte length, bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


SUBMIT = grpc_frame(
    pb.SubmitRequest(
        type=JOB["type"], payload_json=orjson.dumps(JOB["payload"])
    ).SerializeToString()
)  # the body of one Submit call, as h2load and nghttp send it


def post_grpc(
    tool: tuple[str, ...], url: str, key: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run nghttp2's ``tool`` posting one framed ``SubmitRequest`` as a gRPC call to ``url``."""
    with tempfile.NamedTemporaryFile("wb", suffix=".bin", delete=False) as file:
        file.write(SUBMIT)
    try:
        return subprocess.run(
            [
                *tool,
                *("-d", file.name, "-H", "content-type: application/grpc", "-H", "te: trailers"),
                *("-H", f"authorization: Bearer {key}", url),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        os.unlink(file.name)


def h2load(
    url: str, key: str, seconds: int, connections: int, streams: int
) -> tuple[float, int, int]:
    """Return (calls/s, calls answered 200, calls failed) of one h2load run of ``Submit`` calls."""
    threads = str(min(2, connections))
    tool = ("h2load", "-D", str(seconds), "-c", str(connections), "-m", str(streams), "-t", threads)
    done = post_grpc(tool, url, key, seconds + 60)
    done.check_returncode()
    found = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", done.stdout)
    counts = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", done.stdout)
    codes = re.search(r"status codes: (\d+) 2xx", done.stdout)
    if found is None or counts is None or codes is None:
        raise RuntimeError(f"h2load printed no figures:\n{done.stdout}\n{done.stderr}")
    failed = sum(int(n) for n in counts.groups()[1:])
    return float(found.group(1)), int(codes.group(1)), failed


@contextlib.contextmanager
def sampled(server: subprocess.Popen[bytes], opts: argparse.Namespace, name: str) -> Iterator[None]:
    """Sample the server with py-spy while the block runs, with ``--profile DIR``: collapsed stacks."""
    if opts.profile is None:
        yield
        return
    opts.profile.mkdir(parents=True, exist_ok=True)
    out = opts.profile / f"{name}-{len(list(opts.profile.glob(name + '-*')))}.txt"
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if spy is None:
        raise RuntimeError("--profile needs py-spy (bash bench/setup.sh puts it in .venv-bench)")
    sampler = subprocess.Popen(
        [
            *(spy, "record", "--pid", str(server.pid), "--format", "raw", "--rate", "250"),
            *("--threads", "-o", str(out)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        sampler.send_signal(signal.SIGINT)  # py-spy writes what it sampled, then exits
        sampler.wait(timeout=30)


# Per variant, the server's event-loop thread CPU per job of each load: the rest of the
# process's CPU is other threads'.
LOOP_US: dict[str, list[float]] = {}


def loop_seconds(pid: int) -> float:
    """Return the CPU time the main thread of process ``pid`` (its event loop) used so far."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def stored_jobs(store: Path) -> int:
    """Return how many jobs the SQLite store at ``store`` holds."""
    with contextlib.closing(sqlite3.connect(store)) as db:
        return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])


def h2load_variant(
    address: str,
    key: str,
    server: subprocess.Popen[bytes],
    opts: argparse.Namespace,
    store: Path | None,
    streams: int,
) -> Variant:
    """Load ``Submit`` with h2load, ``opts.connections`` / ``streams`` connections x ``streams`` calls each.

    h2load counts a call answered with HTTP 200, which a gRPC call is even when its trailers
    carry an error: the jobs the store gained are counted against those calls, and a call
    answered 200 that made no job is a failure.
    """
    connections = max(1, opts.connections // streams)
    url = f"http://{address}/taskq.v1.Jobs/Submit"
    name = f"{'gRPC Submit' if store else 'gRPC no-op servicer'} (h2load, {connections}x{streams})"

    def load() -> Load:
        jobs_before = stored_jobs(store) if store else 0
        before, loop_before = cpu_seconds(server.pid), loop_seconds(server.pid)
        with sampled(server, opts, f"submit-{connections}x{streams}"):
            rate, answered, failed = h2load(url, key, opts.seconds, connections, streams)
        used = cpu_seconds(server.pid) - before
        loop = loop_seconds(server.pid) - loop_before
        LOOP_US.setdefault(name, []).append(loop / (rate * opts.seconds) * 1e6)
        if store is None:  # the no-op servicer stores nothing
            return Load(rate, failed, used / (rate * opts.seconds) * 1e6)
        made, deadline = 0, time.monotonic() + 10
        while made < answered and time.monotonic() < deadline:
            time.sleep(0.2)  # a job's row is written behind its confirm
            made = stored_jobs(store) - jobs_before
        # Calls still in flight when h2load stopped may have made jobs it did not count.
        if made < answered or made > answered + connections * streams:
            print(f"h2load: {answered} calls answered 200, {made} jobs stored", file=sys.stderr)
            failed += max(answered - made, 1)
        return Load(rate, failed, used / (rate * opts.seconds) * 1e6)

    return Variant(name, load)


def check_grpc_status(address: str, key: str) -> None:
    """Submit one job with nghttp (h2load's sibling) and require the trailers' grpc-status 0."""
    done = post_grpc(("nghttp", "-v", "-n"), f"http://{address}/taskq.v1.Jobs/Submit", key, 30)
    if "grpc-status: 0" not in done.stdout:
        raise RuntimeError(f"the h2load request does not submit a job:\n{done.stdout[-2000:]}")


def http_variant(
    base: str, key: str, server: subprocess.Popen[bytes], opts, *, batch: int = 0
) -> Variant:
    """Load ``POST /jobs`` (``batch``: ``/jobs/batch``) with wrk; the CPU is the server process's."""
    url = f"{base}/jobs/batch" if batch else f"{base}/jobs"
    body = orjson.dumps({"jobs": [JOB] * batch}) if batch else orjson.dumps(JOB)
    jobs, in_flight = max(batch, 1), 1 if batch else opts.connections

    name = f"POST /jobs/batch x{batch} (wrk)" if batch else "POST /jobs (wrk)"

    def load() -> Load:
        before, loop_before = cpu_seconds(server.pid), loop_seconds(server.pid)
        with sampled(server, opts, f"http-batch{batch}"):
            rate, bad, errors = wrk(url, body, opts.seconds, in_flight, key)
        used = cpu_seconds(server.pid) - before
        loop = loop_seconds(server.pid) - loop_before
        LOOP_US.setdefault(name, []).append(loop / (rate * jobs * opts.seconds) * 1e6)
        return Load(rate * jobs, bad + errors, used / (rate * jobs * opts.seconds) * 1e6)

    return Variant(name, load)


async def main(opts: argparse.Namespace) -> None:
    base = load_settings().broker
    vhost = f"taskq-bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="taskq-bench-"))
    async with TestsManagementClient(base) as management:
        await management.create_vhost(vhost)
        amqp = base.with_vhost(vhost).amqp_url.get_secret_value()
        server = noop = None
        try:
            await apply_topology(compile_topology(load_topology()), base.with_vhost(vhost))
            store_url = f"sqlite:///{work}/jobs.sqlite3"
            key = await new_key(store_url)
            port, grpc_port = free_port(), free_port()
            env = {
                "TASKQ_AMQP_URL": amqp,
                "TASKQ_PORT": str(port),
                "TASKQ_GRPC": "true",
                "TASKQ_GRPC_PORT": str(grpc_port),
                "TASKQ_STORE_URL": store_url,
                "TASKQ_BLOB_URL": f"file:{work}/blobs",
                "TASKQ_LOG_LEVEL": "WARNING",
                **UNLIMITED,
            }
            argv = [sys.executable, "-m", "taskctl", "serve"]
            server = serve(argv, env, f"http://127.0.0.1:{port}/readyz")
            http, grpc_address = f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"
            check_grpc_status(grpc_address, key)
            singles = [
                http_variant(http, key, server, opts),
                *(
                    h2load_variant(grpc_address, key, server, opts, work / "jobs.sqlite3", m)
                    for m in opts.streams
                ),
            ]
            if opts.python_client:
                singles.append(grpc_variant(grpc_address, key, server, opts))
            noop_port = free_port()
            noop = subprocess.Popen(  # noqa: ASYNC220 - it serves for the whole run
                [sys.executable, __file__, "--noop-server", str(noop_port)],
                stdout=subprocess.PIPE,
            )
            assert noop.stdout is not None
            noop.stdout.readline()  # it prints a line once it serves
            noop_address = f"127.0.0.1:{noop_port}"
            singles.append(
                h2load_variant(noop_address, key, noop, opts, None, 1)
                if opts.noop_h2load
                else grpc_variant(noop_address, key, noop, opts, name="gRPC no-op servicer")
            )
            batches = (
                [
                    http_variant(http, key, server, opts, batch=opts.batch),
                    grpc_variant(grpc_address, key, server, opts, batch=opts.batch),
                ]
                if opts.batch
                else []
            )
            loop = asyncio.get_running_loop()

            def after() -> None:
                asyncio.run_coroutine_threadsafe(purge(management, vhost), loop).result()

            load_before = os.getloadavg()[0]
            await asyncio.to_thread(measure, singles + batches, opts.rounds, after)
            print(
                f"{opts.seconds} s x {opts.rounds} interleaved rounds; one taskctl serve process "
                f"(SQLite) serving both doors; load average {load_before:.2f} before, "
                f"{os.getloadavg()[0]:.2f} after"
            )
            for title, variants in (
                (f"Single jobs, {opts.connections} in flight", singles),
                (f"Batches of {opts.batch}, one in flight", batches),
            ):
                if not variants:
                    continue
                table(title, variants)
                on_http, on_grpc = (statistics.median(v.cpu_us) for v in variants[:2])
                print(f"server CPU per job, gRPC / HTTP: {on_grpc / on_http:.2f}")
            print("\nServer CPU per job on its event loop's thread (the rest: other threads)")
            for name, loops in LOOP_US.items():
                print(f"{name:44} {statistics.median(loops):11.0f} µs/job")
        finally:
            for process in (server, noop):
                if process is not None:
                    stop(process)
            await management.delete_vhost(vhost)


class NoopJobs:
    """Answers every Submit at once with an empty reply: the gRPC server's own cost per call."""

    async def Submit(self, request: pb.SubmitRequest, context: object) -> pb.SubmitResponse:
        return pb.SubmitResponse()


async def noop_server(port: int) -> None:
    """Serve ``NoopJobs`` on 127.0.0.1:``port`` as taskq serves gRPC, until killed (uvloop, as taskctl serve runs)."""
    from producers.grpc_api.calls import GrpcApp
    from producers.grpc_api.server import serve_calls

    app = GrpcApp(max_message_bytes=4 << 20)
    app.add(pb.DESCRIPTOR.services_by_name["Jobs"], NoopJobs())
    await serve_calls(app, "127.0.0.1", port)
    print("serving", flush=True)
    await asyncio.Event().wait()


async def client(address: str, key: str, seconds: float, concurrency: int, batch: int) -> None:
    """Keep ``concurrency`` Submit (or SubmitBatch) calls in flight for ``seconds``; print [jobs/s, failed]."""
    request = pb.SubmitRequest(type=JOB["type"], payload_json=orjson.dumps(JOB["payload"]))
    many = pb.SubmitBatchRequest(jobs=[request] * batch)
    metadata = (("authorization", f"Bearer {key}"),)
    done = failed = 0
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        stub = jobs_pb2_grpc.JobsStub(channel)
        await stub.Submit(request, metadata=metadata)  # connected before the clock starts
        started = time.perf_counter()
        deadline = started + seconds

        async def caller() -> None:
            nonlocal done, failed
            while time.perf_counter() < deadline:
                try:
                    if batch:
                        answer = await stub.SubmitBatch(many, metadata=metadata, timeout=30)
                        done += answer.accepted
                        failed += answer.rejected
                    else:
                        await stub.Submit(request, metadata=metadata, timeout=10)
                        done += 1
                except grpc.aio.AioRpcError as exc:
                    failed += 1
                    if failed == 1:
                        print(f"first failure: {exc.code().name} {exc.details()}", file=sys.stderr)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    print(orjson.dumps([done / wall, failed]).decode())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--noop-server":
        import uvloop

        uvloop.run(noop_server(int(sys.argv[2])))
    if len(sys.argv) == 7 and sys.argv[1] == "--client":
        address, key, seconds, concurrency, batch = sys.argv[2:]
        asyncio.run(client(address, key, float(seconds), int(concurrency), int(batch)))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batch", type=int, default=500, help="0: no batch rows")
    parser.add_argument(
        "--streams",
        type=lambda text: [int(m) for m in text.split(",")],
        default=[1, 4],
        help="h2load rows: concurrent calls per connection, --connections in flight in all",
    )
    parser.add_argument(
        "--python-client",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also load Submit from the grpc.aio client process",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="sample the server with py-spy during each h2load and wrk load into this folder",
    )
    parser.add_argument(
        "--noop-h2load",
        action="store_true",
        help="load the no-op servicer with h2load instead of the grpc.aio client",
    )
    asyncio.run(main(parser.parse_args()))
