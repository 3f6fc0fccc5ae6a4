"""Tables and plots to files: Markdown, LaTeX (booktabs), CSV and one self-contained HTML page.

LaTeX and HTML tables are rendered by pandas' :class:`~pandas.io.formats.style.Styler` (its Jinja2
templates): text escaped (:func:`latex_escape`, HTML), numeric columns right-aligned, each metric column's best
value in bold; Markdown pipe tables by :meth:`pandas.DataFrame.to_markdown` (tabulate).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from pandas.io.formats.style import Styler

from results._table import Table

LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                 "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}
LATEX_SYMBOLS = {"±": r"$\pm$", "δ": r"$\delta$", "τ": r"$\tau$", "Δ": r"$\Delta$", "—": "---", "–": "--",
                 "−": "-", "<": r"$<$", ">": r"$>$", "×": r"$\times$", "≥": r"$\geq$", "≤": r"$\leq$",
                 "·": r"$\cdot$", "→": r"$\rightarrow$"}
LATEX_RE = re.compile("|".join(re.escape(k) for k in [*LATEX_SPECIAL, *LATEX_SYMBOLS]))
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1300px}
table{border-collapse:collapse;margin:0.5em 0 0.3em;font-size:14px}
th,td{border-top:1px solid #bbb;border-bottom:1px solid #bbb;padding:4px 10px;text-align:left}
th{background:#f0f0f0}p.notes{font-size:12px;color:#555;max-width:1100px}
figure{display:inline-block;vertical-align:top;margin:0.5em 1em 0.5em 0}
img{max-width:100%;border:1px solid #ddd}"""
NUMERIC_CSS = "text-align: right; font-variant-numeric: tabular-nums;"  # a numeric column's header and cells


def latex_escape(text: str) -> str:
    """Text safe in LaTeX, with ±, δ, τ and Δ as math."""
    return LATEX_RE.sub(lambda m: LATEX_SPECIAL.get(m.group(0)) or LATEX_SYMBOLS[m.group(0)], text)


def _cell(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _cells(table: Table, render: Callable[[str, bool, str | None], str]) -> list[list[str]]:
    """Each row's cells as ``render(text, bold, url)`` makes them (bold: the column's best value; url: the
    cell's link, or None)."""
    bold = set(table.bold)
    urls = {(i, c): url for i, c, url in table.links}
    return [[render(_cell(v), (i, str(c)) in bold, urls.get((i, str(c))))
             for c, v in zip(table.display.columns, row, strict=True)]
            for i, row in enumerate(table.display.itertuples(index=False))]


def _texts(table: Table) -> pd.DataFrame:
    """``table.display`` as text (``""`` where a value is missing), rows numbered from 0 as ``bold`` and
    ``links`` number them."""
    texts = table.display.map(_cell).astype(object)
    texts.index = pd.RangeIndex(len(texts))
    texts.columns = [str(c) for c in texts.columns]
    return texts


def _bold(table: Table, css: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """For ``Styler.apply(..., axis=None)``: ``css`` on each best value that has text, nothing elsewhere."""
    def styles(texts: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame("", index=texts.index, columns=texts.columns)
        for row, column in table.bold:
            if texts.at[row, column]:
                out.at[row, column] = css
        return out
    return styles


def column_spec(table: Table) -> str:
    """The ``tabular`` column spec: ``r`` for numeric columns, ``l`` for text."""
    return "".join("r" if str(c) in table.numeric else "l" for c in table.display.columns)


def table_latex(table: Table) -> str:
    """One table as a LaTeX ``table`` with a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``): numbers
    right-aligned, each metric column's best value in bold, the title and notes as its caption."""
    if table.display.empty:
        return f"% {table.title}: {table.notes}\n"
    styler = Styler(_texts(table)).hide(axis="index").format(latex_escape).format_index(latex_escape, axis=1)
    styler.apply(_bold(table, "textbf: --rwrap;"), axis=None)  # \textbf{best}
    styler.set_table_styles([{"selector": "small", "props": ":;"}])  # \small
    label = re.sub(r"[^A-Za-z0-9]+", "-", table.name)
    return styler.to_latex(column_format=column_spec(table), position="t", position_float="centering", hrules=True,
                           label=f"tab:{label}", caption=latex_escape(f"{table.title}. {table.notes}"),
                           environment="table")


def to_latex(tables: Sequence[Table]) -> str:
    """Every table, one after another (booktabs)."""
    return "% ocr-study report: \\usepackage{booktabs}\n" + "\n".join(table_latex(t) for t in tables)


def _markdown_cell(text: str, bold: bool, url: str | None) -> str:
    text = f"[{text}]({url})" if url and text else text
    return f"**{text}**" if bold and text else text


def _markdown_table(table: Table) -> str:
    """A pipe table: numbers right-aligned (``---:``), each metric column's best value in ``**bold**``."""
    frame = table.display
    if frame.empty:
        return "_(no data)_"
    rows = _cells(table, _markdown_cell)
    align = ["right" if str(c) in table.numeric else "left" for c in frame.columns]
    frame = pd.DataFrame(rows, columns=frame.columns)
    return str(frame.to_markdown(index=False, colalign=align, disable_numparse=True))  # "30.00" stays "30.00"


def to_markdown(title: str, tables: Sequence[Table], plots: Sequence[Path], base: Path) -> str:
    """A Markdown document: each table with its notes, then the plots (linked relative to ``base``)."""
    parts = [f"# {title}", ""]
    for table in tables:
        parts += [f"## {table.title}", "", _markdown_table(table), "", f"*{table.notes}*", ""]
    if plots:
        parts += ["## Plots", ""]
        parts += [f"![{p.stem}]({p.relative_to(base).as_posix()})\n" for p in plots]
    return "\n".join(parts)


def write_csv(tables: Sequence[Table], folder: Path) -> list[Path]:
    """Each table's numbers as ``<name>.csv`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in tables:
        path = folder / f"{table.name}.csv"
        table.values.to_csv(path, index=False)
        paths.append(path)
    return paths


class _Link(NamedTuple):
    """A cell's text and the URL it links to (see :func:`_html_text`)."""

    text: str
    url: str


def _html_text(value: str | _Link) -> str:
    """A cell's HTML: its text (the Styler escaped it) or, for a :class:`_Link`, an ``<a href>``.

    Styler's own links (``format(hyperlinks="html")``) turn only URLs written in a cell's text into links; a
    trial's cell shows its id and links to its run elsewhere, so the cell holds both and this writes the link.
    """
    if isinstance(value, _Link):
        return f'<a href="{html.escape(value.url, quote=True)}">{html.escape(value.text)}</a>'
    return value


def _html_table(table: Table, uuid: str) -> str:
    """An HTML table (``id="T_<uuid>"``): numeric columns right-aligned, best values in bold, linked cells as
    ``<a href>``."""
    if table.display.empty:
        return "<p><em>(no data)</em></p>"
    texts = _texts(table)
    for row, column, url in table.links:
        if texts.at[row, column]:
            texts.at[row, column] = _Link(texts.at[row, column], url)
    styler = Styler(texts, uuid=uuid, cell_ids=False).hide(axis="index")
    styler.format(_html_text, escape="html").format_index(escape="html", axis=1)
    styler.set_table_styles({c: [{"selector": cell, "props": NUMERIC_CSS} for cell in ("th", "td")]
                             for c in table.numeric}, overwrite=False)
    styler.apply(_bold(table, "font-weight: bold;"), axis=None)
    return styler.to_html()


def _html_image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"></figure>'


def to_html(title: str, tables: Sequence[Table], plots: Sequence[Path], summary: str,
            mlflow_url: str | None = None) -> str:
    """One self-contained HTML page: the tables, then the plots embedded as base64 PNG; with ``mlflow_url``
    (the study's runs table on an MLflow server), a link to it under the summary."""
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(summary)}</p>"]
    if mlflow_url:
        parts.append(f'<p><a href="{html.escape(mlflow_url, quote=True)}">The study\'s runs in MLflow</a></p>')
    for i, table in enumerate(tables):
        uuid = f"{i}_{re.sub(r'[^A-Za-z0-9]+', '_', table.name)}"  # the table's id: unique in the page
        parts += [f"<h2>{html.escape(table.title)}</h2>", _html_table(table, uuid),
                  f'<p class="notes">{html.escape(table.notes)}</p>']
    if plots:
        parts += ["<h2>Plots</h2>", *(_html_image(p) for p in plots)]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
