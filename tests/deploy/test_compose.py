from __future__ import annotations

import json
import re
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


def test_taskq_env_names_broker_and_management_urls(compose: dict[str, Any]) -> None:
    env = compose["services"]["taskq"]["environment"]
    names = set(env) if isinstance(env, dict) else {item.split("=", 1)[0] for item in env}
    assert {"TASKQ_AMQP_URL", "TASKQ_MANAGEMENT_URL"} <= names


def test_taskq_runs_taskctl_up_when_entrypoint_and_command_combine(
    compose: dict[str, Any],
) -> None:
    service = compose["services"]["taskq"]
    entrypoint = service.get("entrypoint")
    if entrypoint is None:
        entrypoint = _dockerfile_exec_form("ENTRYPOINT")
    assert _as_argv(entrypoint) + _as_argv(service["command"]) == ["taskctl", "up"]


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
    for volume in compose["services"]["rabbitmq"]["volumes"]:
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
