"""Webhook ingest: verified GitHub-style deliveries per second against the same endpoint unverified.

Usage: .venv/bin/python bench/webhook_ingest.py [--seconds 10] [--connections 32] [--rounds 3]

Needs wrk (Debian package `wrk`) and RabbitMQ with the management API. In a scratch vhost with
the default topology applied, it serves taskq's app with the webhook receiver (SQLite job
store) as its own uvicorn process, once verifying signatures and once with a trusting verifier
that reads the same headers (bench/webhook_app.py), and loads each with wrk: every request is
a new delivery (its own X-GitHub-Delivery) of a 2 KB push event, so each one is verified,
stored and published with a confirm. Rounds alternate the two servers; the table gives the
median requests/s and the cost of verification.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import orjson
from http_ingest import free_port, purge, run_wrk, serve, stop  # a sibling: bench/ is on sys.path

from tests.broker import TestsManagementClient
from tests.webhooks.signing import sign_github
from topology.apply import apply_topology
from topology.compiled import compile_topology
from topology.loader import load_topology
from topology.settings import load_settings

HERE = Path(__file__).resolve().parent
SECRET = "bench-secret"
LUA = """
local counter = 0
function setup(thread)
  thread:set("tid", tostring(math.random(1, 1000000000)))
end
request = function()
  counter = counter + 1
  local headers = {{}}
  headers["Content-Type"] = "application/json"
  headers["X-GitHub-Event"] = "push"
  headers["X-GitHub-Delivery"] = tid .. "-" .. counter
  headers["X-Hub-Signature-256"] = "{signature}"
  return wrk.format("POST", "/webhooks/github", headers, [[{body}]])
end
"""


def push_event() -> bytes:
    """Return a GitHub push event of about 2 KB."""
    commits = [
        {
            "id": uuid.uuid4().hex,
            "message": f"Change {i}: keep it logically awesome",
            "author": {"name": "Octo Cat", "email": "octocat@example.com"},
            "added": [f"src/file_{i}.py"],
        }
        for i in range(8)
    ]
    return orjson.dumps(
        {"ref": "refs/heads/main", "repository": {"full_name": "o/r"}, "commits": commits}
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    base = load_settings().broker
    vhost = f"taskq-bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="taskq-bench-"))
    body = push_event()
    script = LUA.format(signature=sign_github(SECRET.encode(), body), body=body.decode())
    rates: dict[str, list[float]] = {"verify": [], "trust": []}
    async with TestsManagementClient(base) as management:
        await management.create_vhost(vhost)
        settings = base.with_vhost(vhost)
        try:
            await apply_topology(compile_topology(load_topology()), settings)
            for round_ in range(opts.rounds):
                for mode in ("verify", "trust"):
                    port = free_port()
                    env = {
                        "TASKQ_AMQP_URL": settings.amqp_url.get_secret_value(),
                        "TASKQ_STORE_URL": f"sqlite:///{work}/{mode}-{round_}.sqlite3",
                        "TASKQ_BLOB_URL": f"file:{work}/blobs",
                        "TASKQ_WEBHOOK_GITHUB_SECRET": SECRET,
                        # The source's rate limit would refuse most of wrk's load: off here.
                        "TASKQ_WEBHOOK_RATE_LIMIT": "0",
                        "PYTHONPATH": str(HERE.parent),
                    }
                    server = serve(
                        [sys.executable, str(HERE / "webhook_app.py"), str(port), mode],
                        env,
                        f"http://127.0.0.1:{port}/readyz",
                    )
                    try:
                        rate, bad, errors = run_wrk(
                            f"http://127.0.0.1:{port}", script, opts.seconds, opts.connections
                        )
                    finally:
                        stop(server)
                    if bad or errors:
                        raise RuntimeError(
                            f"{mode}: {bad} responses not 2xx, {errors} socket errors"
                        )
                    rates[mode].append(rate)
                    await purge(management, vhost)
        finally:
            await management.delete_vhost(vhost)
    verify, trust = statistics.median(rates["verify"]), statistics.median(rates["trust"])
    print(
        f"{len(body)} B GitHub push deliveries, {opts.connections} connections, {opts.seconds} s x {opts.rounds} rounds"
    )
    print(f"{'endpoint':44} {'req/s':>8} {'ratio':>6}")
    print(f"{'POST /webhooks/github, signature not checked':44} {trust:8.0f} {1.0:6.2f}")
    print(
        f"{'POST /webhooks/github, verified (HMAC-SHA256)':44} {verify:8.0f} {verify / trust:6.2f}"
    )
    print(f"verification costs {100 * (1 - verify / trust):.1f}% of the throughput")


if __name__ == "__main__":
    asyncio.run(main())
