"""taskctl's tables on terminals of every width: ids and states whole, the rest folded or left out."""

from __future__ import annotations

import pytest

from taskctl.context import print_table
from tests.helpers import table_rows

HEADERS = ("id", "status", "type", "attempts", "last error", "priority", "updated")
ROWS = [
    [
        "01a241af-1234-7abc-8def-0123456789ab",
        "cancelled",
        "email.welcome",
        "1",
        "ConnectionError: the peer closed the connection at https://mail.example.com/v1/send-now",
        "medium",
        "2026-11-27T18:48:15Z",
    ],
    ["01a241af-1234-7abc-8def-0123456789ac", "succeeded", "email", "3", "", "urgent", ""],
]


def printed(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, width: int) -> str:
    monkeypatch.setenv("COLUMNS", str(width))
    print_table(HEADERS, ROWS, whole=2)
    return capsys.readouterr().out


def test_in_80_columns_ids_and_states_are_whole_and_the_least_useful_columns_go(
    capsys, monkeypatch
):
    text = printed(capsys, monkeypatch, 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    rows = table_rows(text)
    assert [(r["id"], r["status"]) for r in rows] == [(row[0], row[1]) for row in ROWS]
    assert list(rows[0]) == ["id", "status", "type", "attempts"]
    assert rows[0]["type"] == "email.welcome"


def test_a_wide_terminal_shows_every_column_and_folds_only_what_is_too_long(capsys, monkeypatch):
    text = printed(capsys, monkeypatch, 140)
    assert max(len(line) for line in text.splitlines()) <= 140
    rows = table_rows(text)
    assert list(rows[0]) == list(HEADERS)
    # Short values are whole; the long error folds, and reads the same with its folds joined.
    assert [rows[0][h] for h in ("id", "status", "type", "priority", "updated")] == [
        ROWS[0][i] for i in (0, 1, 2, 5, 6)
    ]
    assert rows[0]["last error"].replace(" ", "") == ROWS[0][4].replace(" ", "")
    assert "\n" not in rows[0]["id"]


def test_a_terminal_narrower_than_the_ids_still_prints_them_whole(capsys, monkeypatch):
    text = printed(capsys, monkeypatch, 30)
    rows = table_rows(text)
    assert [(r["id"], r["status"]) for r in rows] == [(row[0], row[1]) for row in ROWS]
    assert list(rows[0]) == ["id", "status"]


def test_cells_are_text_not_markup(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    print_table(("id", "error"), [["a[bold]b", "[red]not red[/red]"]], whole=1)
    rows = table_rows(capsys.readouterr().out)
    assert rows == [{"id": "a[bold]b", "error": "[red]not red[/red]"}]
