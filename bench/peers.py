"""taskq's worker against its peers: the same no-op job through one worker process of each.

Usage: bash bench/setup.sh, then
  .venv-bench/bin/python bench/peers.py [--jobs 20000] [--rounds 3] [--only taskq,celery]
                                        [--json results.json] [--profile DIR]

(``bench/worker_throughput.py`` runs the raw lines and taskq alone, in taskq's own venv.)

Every system gets ``--jobs`` jobs carrying the same 239-byte JSON payload as persistent messages
on a durable classic queue, enqueued by its own producer before its worker starts, and runs
them through its own worker process with its defaults:

- raw aio-pika (asyncio loop, then uvloop): ``queue.consume``, prefetch 64 (taskq's), ack each
  message;
- raw aiormq on uvloop with ``basic_ack(multiple=True)`` every 32 deliveries (reference line);
- FastStream: ``faststream run`` of one ``RabbitBroker`` subscriber;
- Celery: ``celery worker --pool solo`` (one process), py-amqp transport;
- Dramatiq: ``dramatiq --processes 1 --threads 8``, RabbitmqBroker;
- taskq: ``taskctl worker email`` (uvloop, the default topology, a SQLite job store, every
  feature on, logs at INFO) over jobs submitted with ``AsyncClient.submit_many``.

The rate counts from the 1st to the N-th completion (start-up excluded); CPU µs per job is the
worker process's CPU time over the same span / (N - 1). Rounds are interleaved, every other one
in reverse order; figures are medians with min-max. All of it runs in a scratch vhost.
"""

from __future__ import annotations

from importlib.metadata import version

from worker_runs import BIN, PYTHON, RAW_SYSTEMS, TASKQ, System, compare

SYSTEMS = (
    *RAW_SYSTEMS,
    System(
        "faststream",
        f"FastStream {version('faststream')} subscriber, defaults",
        (str(BIN / "faststream"), "run", "noop.faststream_jobs:app"),
        (PYTHON, "-m", "noop.faststream_jobs"),
        queue="bench.faststream",
    ),
    System(
        "celery",
        f"Celery {version('celery')}, solo pool",
        (str(BIN / "celery"), "-A", "noop.celery_jobs", "worker", "--pool", "solo"),
        (PYTHON, "-m", "noop.celery_jobs"),
        queue="celery",  # Celery's default queue
    ),
    System(
        "dramatiq",
        f"Dramatiq {version('dramatiq')}, 1 process x 8 threads",
        (str(BIN / "dramatiq"), "noop.dramatiq_jobs", "--processes", "1", "--threads", "8"),
        (PYTHON, "-m", "noop.dramatiq_jobs"),
        queue="default",  # Dramatiq's default queue
    ),
    TASKQ,
)
PEERS = ("faststream", "celery", "dramatiq")


if __name__ == "__main__":
    compare(SYSTEMS, PEERS, __doc__)
