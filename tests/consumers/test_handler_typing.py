"""A handler keeps its own type under ``mypy --strict``: ``@handler`` erases nothing."""

from pathlib import Path

from mypy import api

HANDLERS = """
from consumers.handlers import JobContext, handler


@handler("email")
async def send(payload: dict[str, str], context: JobContext) -> int:
    return len(payload)


reveal_type(send)
"""


def test_a_decorated_handler_keeps_its_signature(tmp_path: Path):
    module = tmp_path / "typed_handlers.py"
    module.write_text(HANDLERS)
    out, _, status = api.run(
        ["--strict", "--no-incremental", "--follow-imports=silent", str(module)]
    )
    assert "Untyped decorator" not in out
    revealed = "def (payload: dict[str, str], context: consumers.handlers.JobContext)"
    assert f"{revealed} -> typing.Coroutine[Any, Any, int]" in out, out
    assert status == 0, out
