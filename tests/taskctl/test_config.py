"""One settings model: every TASKQ_* variable declared once, documented, and shown by taskctl config."""

import re
from collections import Counter
from pathlib import Path

import orjson
import pytest

from taskctl.config_command import DOC_END, DOC_START, reference
from tests.taskctl.test_cli import invoke
from topology.errors import SettingsError
from topology.settings import declared, load_settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("telemetry", "topology", "jobstore", "producers", "consumers", "webhooks", "taskctl")
# Names that are not settings: a constant, the docs' placeholder, webhook secrets the topology
# names, the tests' and the local cluster script's own knobs.
NOT_SETTINGS = re.compile(r"TASKQ_(PATTERN|NAME|WEBHOOK_\w+_SECRET|TEST_\w+|CLUSTER_\w+)$")


def test_the_reference_table_in_the_docs_is_current():
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    start, end = text.index(DOC_START), text.index(DOC_END) + len(DOC_END)
    assert text[start:end] == reference(), (
        "replace the table between the markers in docs/configuration.md with the output of "
        "taskctl config --markdown (the introduction above it stays)"
    )


def test_every_variable_is_declared_once_with_a_description():
    variables = [variable for _, variable, _, _ in declared()]
    assert [v for v, n in Counter(variables).items() if n > 1] == []
    assert [v for _, v, _, description in declared() if not description] == []


def test_code_and_docs_name_only_declared_variables():
    known = {variable for _, variable, _, _ in declared()}
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    files += [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    unknown = {
        (str(path.relative_to(ROOT)), name)
        for path in files
        for name in re.findall(r"\bTASKQ_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8"))
        if name not in known and not NOT_SETTINGS.match(name)
    }
    assert unknown == set()


def test_a_bad_value_is_named_and_a_bad_secret_is_not_echoed():
    with pytest.raises(SettingsError) as bad:
        load_settings({"TASKQ_PORT": "eighty", "TASKQ_AMQP_URL": "http://u:hunter2@h/"})
    assert "TASKQ_PORT: Input should be a valid integer" in str(bad.value)
    assert "TASKQ_AMQP_URL: must start with amqp://" in str(bad.value)
    assert "hunter2" not in str(bad.value)


def test_config_shows_values_in_force_where_they_came_from_and_masks_secrets():
    env = {
        "TASKQ_AMQP_URL": "amqp://app:hunter2@mq:5672/",
        "TASKQ_STORE_URL": "postgresql://taskq:s3cret@db/taskq",
        "TASKQ_CALLBACK_SIGNING_KEY": "very-secret-key",
        "TASKQ_PORT": "9090",
    }
    result = invoke("config", "--json", env=env)
    assert result.exit_code == 0, result.output
    assert not {"hunter2", "s3cret", "very-secret-key"} & set(re.findall(r"[\w-]+", result.output))
    rows = {r["variable"]: r for r in orjson.loads(result.output)}
    assert rows["TASKQ_PORT"] | {"secret": False} == {
        "section": "api",
        "variable": "TASKQ_PORT",
        "value": "9090",
        "source": "environment",
        "secret": False,
    }
    assert rows["TASKQ_AMQP_URL"]["value"] == "amqp://app:***@mq:5672/"
    assert rows["TASKQ_STORE_URL"]["value"] == "postgresql://taskq:***@db/taskq"
    assert rows["TASKQ_CALLBACK_SIGNING_KEY"]["value"] == "***"
    assert rows["TASKQ_HOST"]["source"] == "default"
    assert rows["TASKQ_HOST"]["value"] == "127.0.0.1"


def test_config_prints_a_table_for_a_person():
    result = invoke("config", env={"COLUMNS": "120", "TASKQ_HEARTBEAT": "15"})
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "TASKQ_HEARTBEAT" in line)
    assert line.split() == ["TASKQ_HEARTBEAT", "15", "environment"]
