"""Markdown tables rendered by ``tabulate``, in the leaderboard's established format.

``leaderboard.md`` must stay byte-identical for the same records, and its tables were written compactly:
``| a | b |`` rows, cells not padded to the column's width, and a separator of ``---`` (left) and
``---:`` (right) markers whatever the width. tabulate's ``github``/``pipe`` formats pad every cell and
draw separators as wide as the column, so this module gives tabulate a small ``TableFormat`` of its own:
no alignment padding (``stralign=None``, ``numalign=None``), cells taken as text (``disable_numparse``: a
"0.400" stays "0.400"), one space either side (``padding=1``) and a separator line built from the
column alignments alone. Alignment is stated per column: ``"l"`` or ``"r"``.
"""

from __future__ import annotations

from collections.abc import Sequence

MARKERS = {"l": "---", "r": "---:"}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """The table's lines joined by newlines (no trailing newline). ``align``: one ``l``/``r`` per column."""
    from tabulate import DataRow, TableFormat, tabulate

    if len(align) != len(header) or set(align) - set(MARKERS):
        raise ValueError(f"align must give one of {'/'.join(MARKERS)} per column ({len(header)}), got {align!r}")
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row of {len(row)} cells in a table of {len(header)} columns: {list(row)!r:.120}")
    separator = "|" + "|".join(MARKERS[a] for a in align) + "|"
    compact = TableFormat(lineabove=None, linebelowheader=lambda widths, aligns: separator, linebetweenrows=None,
                          linebelow=None, headerrow=DataRow("|", "|", "|"), datarow=DataRow("|", "|", "|"),
                          padding=1, with_header_hide=None)
    return tabulate([list(map(str, row)) for row in rows], headers=list(header), tablefmt=compact,
                    disable_numparse=True, stralign=None, numalign=None)


def table_lines(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """``markdown_table`` as a list of lines (how the leaderboard assembles its text)."""
    return markdown_table(header, rows, align).split("\n")
