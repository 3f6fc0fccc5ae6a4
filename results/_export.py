"""Tables and plots to files: Markdown, LaTeX (booktabs), CSV and one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

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
th.num,td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f0f0f0}p.notes{font-size:12px;color:#555;max-width:1100px}
figure{display:inline-block;vertical-align:top;margin:0.5em 1em 0.5em 0}
img{max-width:100%;border:1px solid #ddd}"""


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


def _latex_cell(text: str, bold: bool, url: str | None = None) -> str:
    return rf"\textbf{{{latex_escape(text)}}}" if bold and text else latex_escape(text)


def column_spec(table: Table) -> str:
    """The ``tabular`` column spec: ``r`` for numeric columns, ``l`` for text."""
    return "".join("r" if str(c) in table.numeric else "l" for c in table.display.columns)


def table_latex(table: Table) -> str:
    """One table as a LaTeX ``table`` with a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``): numbers
    right-aligned, each metric column's best value in bold."""
    frame = table.display
    if frame.empty:
        return f"% {table.title}: {table.notes}\n"
    header = " & ".join(latex_escape(str(c)) for c in frame.columns) + r" \\"
    rows = [" & ".join(cells) + r" \\" for cells in _cells(table, _latex_cell)]
    label = re.sub(r"[^A-Za-z0-9]+", "-", table.name)
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\small",
                      rf"\caption{{{latex_escape(table.title)}. {latex_escape(table.notes)}}}",
                      rf"\label{{tab:{label}}}", rf"\begin{{tabular}}{{{column_spec(table)}}}", r"\toprule",
                      header, r"\midrule", *rows, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])


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


def _html_cell(text: str, bold: bool, url: str | None) -> str:
    shown = html.escape(text)
    if url and text:
        shown = f'<a href="{html.escape(url, quote=True)}">{shown}</a>'
    return f"<strong>{shown}</strong>" if bold and text else shown


def _html_table(table: Table) -> str:
    """An HTML table: numeric columns of class ``num`` (right-aligned), best values in ``<strong>``, linked
    cells as ``<a href>``."""
    frame = table.display
    if frame.empty:
        return "<p><em>(no data)</em></p>"
    kind = [' class="num"' if str(c) in table.numeric else "" for c in frame.columns]
    head = "".join(f"<th{k}>{html.escape(str(c))}</th>" for c, k in zip(frame.columns, kind, strict=True))
    rows = _cells(table, _html_cell)
    body = "".join("<tr>" + "".join(f"<td{k}>{c}</td>" for c, k in zip(cells, kind, strict=True)) + "</tr>"
                   for cells in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
    for table in tables:
        parts += [f"<h2>{html.escape(table.title)}</h2>", _html_table(table),
                  f'<p class="notes">{html.escape(table.notes)}</p>']
    if plots:
        parts += ["<h2>Plots</h2>", *(_html_image(p) for p in plots)]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
