import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.rabbitmq


def test_up_applies_the_topology_and_stops_cleanly_on_ctrl_c(vhost):
    env = {**os.environ, "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(), "COLUMNS": "200"}
    process = subprocess.Popen(
        [sys.executable, "-c", "from taskctl.cli import main; main()", "up", "--grace", "5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if "press Ctrl-C" in line or not line:
            break
    assert any("topology applied" in line and "55 created" in line for line in lines), lines
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=15)
    assert process.returncode == 0, rest
    assert "stopping 0 processes" in rest
