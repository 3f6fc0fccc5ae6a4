"""What every report table shares: the :class:`Table` shape and the symbols tables show for parameters.

Its own module so that the modules making tables (:mod:`results._tables`, :mod:`results._importance`,
:mod:`results._links`) and the one writing them (:mod:`results._export`) import it, not one another.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

SYMBOLS = {"ocr.delta": "δ", "ocr.tau": "τ"}  # a parameter's symbol in headers and settings


@dataclass(frozen=True)
class Table:
    """A report table: a file stem, a title, notes saying how it was computed, numbers and their text.

    ``numeric`` names the ``display`` columns holding numbers (right-aligned by every renderer); ``bold``
    holds the (row position, column) of each metric column's best value (bold in Markdown, LaTeX, HTML);
    ``links`` (row position, column, URL) make cells links in Markdown and HTML."""

    name: str
    title: str
    notes: str
    values: pd.DataFrame
    display: pd.DataFrame
    numeric: tuple[str, ...] = ()
    bold: tuple[tuple[int, str], ...] = ()
    links: tuple[tuple[int, str, str], ...] = ()

    def __post_init__(self) -> None:
        columns = [str(c) for c in self.display.columns]
        named = (*self.numeric, *(c for _, c in self.bold), *(c for _, c, _ in self.links))
        unknown = [c for c in named if c not in columns]
        if unknown:
            raise ValueError(f"Table {self.name!r}: numeric/bold/links name columns {unknown} not in its display "
                             f"columns {columns}")
        rows = [r for r in (*(r for r, _ in self.bold), *(r for r, _, _ in self.links))
                if not 0 <= r < len(self.display)]
        if rows:
            raise ValueError(f"Table {self.name!r}: bold/link rows {rows} outside 0..{len(self.display) - 1}")
