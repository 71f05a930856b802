"""The on-call guide and runbooks: every alert explained, every taskctl command real."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main

from taskctl.cli import app
from tests.grafana.artifacts import DOCS, ROOT, load_rules

PAGES = [DOCS / "observability.md", *sorted((DOCS / "runbooks").glob("*.md"))]
# `taskctl ...` inside inline code or a fenced block, up to the end of the span or a comment.
COMMAND = re.compile(r"(?:`|^\s*)(taskctl [^`#\n]*)", re.MULTILINE)


def commands_in(page: Path) -> list[str]:
    return [m.group(1).strip() for m in COMMAND.finditer(page.read_text(encoding="utf-8"))]


def unknown_words(line: str) -> list[str]:
    """Return the subcommands and options of a ``taskctl`` line that taskctl does not have."""
    command: Any = typer.main.get_command(app)
    unknown = []
    for word in line.split()[1:]:
        subcommands = getattr(command, "commands", None)
        if subcommands is not None:
            if word not in subcommands:
                return [word]  # an unknown subcommand: nothing after it can be checked
            command = subcommands[word]
        elif word.startswith("--"):
            options = {opt for param in command.params for opt in param.opts}
            if word.split("=")[0] not in options:
                unknown.append(word)
    return unknown


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_taskctl_commands_in_the_docs_exist(page: Path):
    lines = commands_in(page)
    bad = {line: unknown_words(line) for line in lines if unknown_words(line)}
    assert bad == {}


def test_the_command_check_catches_made_up_commands():
    assert unknown_words("taskctl dlq replay GROUP --rate 20") == []
    assert unknown_words("taskctl dlq replay GROUP --speed 20") == ["--speed"]
    assert unknown_words("taskctl restart GROUP") == ["restart"]
    assert unknown_words("taskctl topology") == []  # naming the command family is fine


def test_every_runbook_uses_taskctl():
    for page in PAGES[1:]:
        assert commands_in(page), f"{page.name} shows no taskctl command to check with"


def test_every_alert_is_explained_in_the_on_call_guide():
    guide = (DOCS / "observability.md").read_text(encoding="utf-8")
    for rule in load_rules():
        name = rule["alert"]
        assert f"| `{name}` |" in guide, f"{name} is not in the alerts table"
        assert f"- **{name}**" in guide, f"{name} is not explained in plain words"
        assert f"(runbooks/{name}.md)" in guide


def test_the_readme_links_the_on_call_guide():
    assert "(docs/observability.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
