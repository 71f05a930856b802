"""Tables that fit the terminal: ids and states are never cut; the least useful columns go first."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from taskctl.context import out

FOLDED = 12  # the fewest characters an optional column is shown in; longer values fold
GAP = 3  # a space of padding each side of the blank rule between two columns
EDGES = 2  # a blank column left and right of the table


def fitted(headers: Sequence[str], rows: Sequence[Sequence[str]], *, whole: int) -> Table:
    """Return a table of ``rows`` as wide as the terminal; its first ``whole`` columns are never cut."""
    # The optional columns share what is left, folding their values; the rightmost goes while
    # they cannot each have FOLDED characters.
    wants = [
        max([cell_len(header)] + [cell_len(row[i]) for row in rows])
        for i, header in enumerate(headers)
    ]
    width = out().width
    fixed = sum(wants[:whole]) + EDGES
    shown = len(headers)
    while (
        shown > whole
        and fixed + GAP * (shown - 1) + sum(min(want, FOLDED) for want in wants[whole:shown])
        > width
    ):
        shown -= 1
    widths = wants[:whole] + _shares(wants[whole:shown], width - fixed - GAP * (shown - 1))
    # Its own width, not the terminal's: whole columns stay whole on a terminal too narrow
    # for them, where the terminal wraps the lines instead.
    table = Table(
        box=box.SIMPLE_HEAD, pad_edge=False, width=EDGES + GAP * (shown - 1) + sum(widths)
    )
    for i, header in enumerate(headers[:shown]):
        if i < whole:
            table.add_column(header, no_wrap=True, width=widths[i])
        else:
            table.add_column(header, width=widths[i], overflow="fold")
    for row in rows:
        # Text, not markup: a job type or an error may hold square brackets.
        table.add_row(*(Text(cell) for cell in row[:shown]))
    return table


def _shares(wants: list[int], room: int) -> list[int]:
    """Return widths within ``room``: each its want up to ``FOLDED``, then the rest, least wanting first."""
    widths = [min(want, FOLDED) for want in wants]
    spare = room - sum(widths)
    by_want = sorted(range(len(wants)), key=wants.__getitem__)
    for served, i in enumerate(by_want):
        more = min(wants[i] - widths[i], spare // (len(by_want) - served))
        widths[i] += more
        spare -= more
    return widths
