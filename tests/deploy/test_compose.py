from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).parents[2] / "deploy"
RABBITMQ_CONF = DEPLOY / "rabbitmq" / "rabbitmq.conf"

# Keys confirmed in the RabbitMQ 3.10.8 cuttlefish schemas (rabbit.schema and
# rabbitmq_management.schema). Add a key here only after checking it exists on 3.10.
KNOWN_CONF_KEYS = {
    "loopback_users.guest",
    "heartbeat",
    "consumer_timeout",
    "vm_memory_high_watermark.relative",
    "disk_free_limit.absolute",
    "collect_statistics_interval",
    "management.tcp.port",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _conf_settings() -> list[tuple[str, str]]:
    settings = []
    for line in RABBITMQ_CONF.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        assert sep, f"not a `key = value` line: {line!r}"
        settings.append((key.strip(), value.strip()))
    return settings


def _as_argv(value: str | list[str]) -> list[str]:
    return value.split() if isinstance(value, str) else list(value)


def _dockerfile_exec_form(instruction: str) -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    match = re.search(rf"^{instruction}\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert match, f"Dockerfile has no exec-form {instruction}"
    argv = json.loads(match.group(1))
    assert isinstance(argv, list)
    return argv


def test_both_services_exist_when_compose_is_loaded(compose: dict[str, Any]) -> None:
    assert {"rabbitmq", "taskq"} <= set(compose["services"])


def test_rabbitmq_image_is_3_10_management(compose: dict[str, Any]) -> None:
    image = compose["services"]["rabbitmq"]["image"]
    assert image.rpartition(":")[2] == "3.10-management"


def _script(service: dict[str, Any]) -> str:
    entrypoint = service["entrypoint"]
    assert entrypoint[:2] == ["sh", "-c"], entrypoint
    return str(entrypoint[2])


def test_taskq_reaches_the_broker_as_its_generated_user(compose: dict[str, Any]) -> None:
    script = _script(compose["services"]["taskq"])
    # Compose turns $$ into $: the shell reads the password from the secret volume.
    assert "password=$$(cat /run/taskq-broker/password)" in script
    assert 'TASKQ_AMQP_URL="amqp://taskq:$${password}@rabbitmq:5672/"' in script
    assert 'TASKQ_MANAGEMENT_URL="http://taskq:$${password}@rabbitmq:15672"' in script
    assert "guest" not in yaml.safe_dump(compose)
    assert "broker-secret:/run/taskq-broker:ro" in compose["services"]["taskq"]["volumes"]


def test_taskq_runs_taskctl_up_when_entrypoint_and_command_combine(
    compose: dict[str, Any],
) -> None:
    service = compose["services"]["taskq"]
    # sh -c '... exec taskctl "$@"' taskctl up: the shell's "$@" is the command, so taskctl up.
    assert _script(service).endswith('exec taskctl "$$@"')
    assert service["entrypoint"][3:] == ["taskctl"]
    assert _as_argv(service["command"]) == ["up"]


def test_image_runs_taskctl_up_when_started_without_arguments() -> None:
    assert _dockerfile_exec_form("ENTRYPOINT") + _dockerfile_exec_form("CMD") == [
        "taskctl",
        "up",
    ]


def test_taskq_waits_for_a_healthy_broker(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["taskq"]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert "healthcheck" in services["rabbitmq"]


def test_bind_mount_sources_exist_when_resolved_from_deploy(compose: dict[str, Any]) -> None:
    for volume in [v for s in compose["services"].values() for v in s.get("volumes", ())]:
        source = volume.split(":", 1)[0]
        if source.startswith("."):
            assert (DEPLOY / source).is_file(), source


def test_dockerfile_exists_when_resolved_from_build_context(compose: dict[str, Any]) -> None:
    build = compose["services"]["taskq"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (
        DEPLOY / "Dockerfile"
    ).resolve()


def test_every_conf_key_is_known_when_comments_and_blanks_are_ignored() -> None:
    keys = [key for key, _ in _conf_settings()]
    assert keys
    assert set(keys) <= KNOWN_CONF_KEYS, set(keys) - KNOWN_CONF_KEYS
    assert len(keys) == len(set(keys)), "a key is set twice"


def test_conf_values_carry_no_trailing_comment() -> None:
    # rabbitmq.conf has no inline comments: a `#` after a value becomes part of the value.
    for key, value in _conf_settings():
        assert value, key
        assert "#" not in value, key


def test_enabled_plugins_ends_with_dot_and_newline() -> None:
    text = (DEPLOY / "rabbitmq" / "enabled_plugins").read_text(encoding="utf-8")
    assert text.endswith("].\n")
    assert "rabbitmq_management" in text


def test_every_port_is_published_on_loopback_only(compose: dict[str, Any]) -> None:
    ports = [p for s in compose["services"].values() for p in s.get("ports", ())]
    assert ports
    for port in ports:
        assert str(port).startswith("127.0.0.1:"), port


def test_the_grpc_api_is_published_and_turned_on_from_the_hosts_environment(
    compose: dict[str, Any],
) -> None:
    taskq = compose["services"]["taskq"]
    env = taskq["environment"]
    assert (env["TASKQ_GRPC"], env["TASKQ_GRPC_HOST"]) == ("${TASKQ_GRPC:-false}", "0.0.0.0")
    assert f"127.0.0.1:{env['TASKQ_GRPC_PORT']}:{env['TASKQ_GRPC_PORT']}" in taskq["ports"]


def test_guest_stays_loopback_only() -> None:
    assert ("loopback_users.guest", "true") in _conf_settings()


def test_the_broker_starts_with_the_generated_user(compose: dict[str, Any]) -> None:
    broker = compose["services"]["rabbitmq"]
    assert broker["depends_on"]["broker-user"]["condition"] == "service_completed_successfully"
    script = _script(broker)
    assert script.startswith("cp /secret/20-taskq-user.conf /etc/rabbitmq/conf.d/ && ")
    assert script.endswith('exec docker-entrypoint.sh "$$@"')
    assert broker["command"] == ["rabbitmq-server"]
    maker = compose["services"]["broker-user"]
    assert maker["entrypoint"] == ["sh", "/taskq/broker-user.sh"]


def test_the_broker_user_script_makes_one_password_and_keeps_it(tmp_path: Path) -> None:
    script = DEPLOY / "rabbitmq" / "broker-user.sh"
    subprocess.run(["sh", str(script), str(tmp_path)], check=True, timeout=30)
    password = (tmp_path / "password").read_text()
    assert len(password) == 32
    assert password.isalnum()
    conf = (tmp_path / "20-taskq-user.conf").read_text()
    assert "default_user = taskq\n" in conf
    assert f"default_pass = {password}\n" in conf
    assert (tmp_path / "password").stat().st_mode & 0o777 == 0o444
    subprocess.run(["sh", str(script), str(tmp_path)], check=True, timeout=30)
    assert (tmp_path / "password").read_text() == password  # a restart keeps the user working
