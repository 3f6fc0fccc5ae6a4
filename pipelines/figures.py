"""The trial's pictures, drawn from the numbers a trial saves (numpy and matplotlib only: no torch, no model).

A trial writes the numbers every evaluated epoch (``val_examples.npz``, ``prior.csv``: cheap) and draws
the pictures (``val_examples.png``, ``prior.png``: about a second of matplotlib each) once, at its last
report; a trial stopped early is drawn by whoever uploads its artifacts (the study's MLflow callback), so
every run still shows both, drawn from the epoch it stopped at. :func:`draw_pending` is that step.

``val_examples.npz`` holds, per example row ``i``: ``picture_i`` (uint8, ``(H, W)`` grey or ``(H, W, 3)``),
``truth_i`` and ``prediction_i`` (int16 labels, 255 = ignore), ``oc_i`` (bool) and, with the OCR loss on,
``loss_i`` (float32, the per-pixel OCR loss); and ``meta``, a JSON string (class names, panel titles,
epoch, how many images were scanned, the loss's settings, each row's image index, tags and OC count).
"""

from __future__ import annotations

import contextlib
import csv as csv_module
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from record import OCR_OFF, PRIOR_FILE

EXAMPLES_DATA = "val_examples.npz"
EXAMPLES_FIGURE = "val_examples.png"
PRIOR_FIGURE = "prior.png"
FIGURES_CACHE = "figures"  # under a cache folder: pictures drawn from numbers that repeat across trials
LOSS_UNIT = "OCR loss per pixel (logit units)"  # a hinge on logit differences with margin δ
IGNORE = 255  # pipelines.data.IGNORE, spelled here too: importing pipelines.data would load torch


def example_columns(selection: str) -> tuple[str, ...]:
    """The panels of a row: with the OCR loss off (a baseline) no loss maps, which would be computed with
    a δ and τ that the trial never used."""
    columns = ("image", "ground truth", "prediction", "OC pixels")
    if selection == OCR_OFF:
        return columns
    return (*columns, "OCR loss, all pixels", "OCR loss, OC pixels only")


def row_label(index: int, tags: Sequence[str], epoch: int | None) -> str:
    """A row's label: the validation image's index, its image-level tags, and the epoch drawn."""
    lines = [f"val image #{index}", "tags: " + (", ".join(tags) or "none")]
    if epoch is not None:
        lines.append(f"epoch {epoch}")
    return "\n".join(lines)


def loss_title(selection: str, delta: float, tau: float) -> str:
    """What the loss maps show, for the figure's title."""
    if selection == OCR_OFF:
        return "OCR loss off (ocr.selection = none): no loss maps"
    return f"OCR loss under δ = {delta:.3g}, τ = {tau:.3g} (selection {selection})"


def _cmap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name]


def _legend(fig: Any, names: list[str], shown: set[int], k: int) -> None:
    """A legend of the classes that appear in the label panels, in the panels' colours."""
    from matplotlib.patches import Patch

    cmap = _cmap("tab20")
    handles = [Patch(color=cmap(c / max(k - 1, 1)), label=names[c]) for c in sorted(shown) if c < len(names)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=7, frameon=False)


def _labels(mask: np.ndarray) -> np.ndarray:
    out = mask.astype(np.float64)
    out[mask == IGNORE] = np.nan
    return out


def _draw_row(axes: Any, arrays: Any, i: int, k: int) -> set[int]:
    """One example's panels; returns the classes its label panels show."""
    truth, prediction, oc = arrays[f"truth_{i}"], arrays[f"prediction_{i}"], arrays[f"oc_{i}"]
    picture = arrays[f"picture_{i}"]
    axes[0].imshow(picture, cmap="gray")  # grey: stretched to its own range, as the trial drew it
    for ax, panel in zip(axes[1:3], (_labels(truth), prediction.astype(np.float64)), strict=True):
        ax.imshow(panel, cmap="tab20", vmin=0, vmax=k - 1, interpolation="nearest")
    axes[3].imshow(oc.astype(np.float64), cmap="Reds", vmin=0, vmax=1, interpolation="nearest")
    axes[3].set_xlabel(f"{int(oc.sum())} OC pixels", fontsize=6)
    if f"loss_{i}" in arrays:
        loss = arrays[f"loss_{i}"]
        top = float(loss.max()) or 1.0
        for ax, loss_map in zip(axes[4:], (loss, loss * oc), strict=False):
            image = ax.imshow(loss_map, cmap="magma", vmin=0, vmax=top, interpolation="nearest")
            bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
            bar.ax.tick_params(labelsize=6)
            bar.set_label(LOSS_UNIT, fontsize=6)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return {int(c) for c in np.unique(prediction)} | {int(c) for c in np.unique(truth) if int(c) != IGNORE}


def draw_examples(data: Path, path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Draw ``val_examples.npz`` (see the module docstring) as the grid of ``val_examples.png``: a row per
    example with its index, tags and epoch, a class legend and labelled colour bars; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with np.load(data) as arrays:
        meta = json.loads(str(arrays["meta"]))
        columns, rows, epoch = meta["columns"], meta["rows"], meta["epoch"]
        names = ["background", *meta["class_names"]]
        n, k = max(len(rows), 1), len(names)
        fig, axes = plt.subplots(n, len(columns), figsize=(2.5 * len(columns) + 0.6, 2.3 * n + 1.0), squeeze=False)
        shown: set[int] = set()
        for i, row in enumerate(rows):
            shown |= _draw_row(axes[i], arrays, i, k)
            axes[i][0].set_ylabel(row_label(row["index"], row["tags"], epoch), fontsize=7)
    for j, title in enumerate(columns):
        axes[0][j].set_title(title, fontsize=8)
    at = f" at epoch {epoch}" if epoch is not None else ""
    fig.suptitle(f"Validation images with the most out-of-candidate pixels{at} (of the first {meta['scan']}); "
                 f"{meta['loss']}", fontsize=8)
    _legend(fig, names, shown, k)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    fig.savefig(path, dpi=110, metadata=metadata)
    plt.close(fig)
    return path


def draw_prior(csv: Path, path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Draw ``prior.csv`` (a matrix whose corner cell names the prior variant) as its two heat maps."""
    from ocr._prior_plot import draw_prior_heatmaps

    header, *rows = list(csv_module.reader(io.StringIO(csv.read_text())))
    matrix = np.array([[float(x) for x in row[1:]] for row in rows])
    title = f"prior: {header[0]}" if header[0] else "prior"
    return draw_prior_heatmaps(matrix, header[2:], path, title=title, metadata=metadata)


SOURCE_KEY = "ocr-study source"  # a PNG text chunk: the digest of the numbers it was drawn from


def _digest(data: Path) -> str:
    return hashlib.sha256(data.read_bytes()).hexdigest()[:16]


def _drawn_from(figure: Path) -> str | None:
    """The digest a picture says it was drawn from (``None``: missing, cut short, unreadable, or drawn otherwise).

    Reads the chunk from the PNG's header (matplotlib writes text before the pixels) and checks every chunk's
    CRC to the end of the file (Pillow's ``verify``) without decoding the pixels: 0.2 ms for a trial's
    examples instead of 50–70 ms (``Image.text`` decodes the picture), paid for two pictures per trial by the
    trial and again by the driver."""
    from PIL import Image

    try:
        with Image.open(figure) as image:
            source = image.info.get(SOURCE_KEY)
            image.verify()  # a file cut short (a trial killed while it wrote it) raises here
    except (OSError, ValueError, SyntaxError):
        return None
    return source if isinstance(source, str) else None


def _draw_kept(draw: Callable[[Path, Path, dict[str, str]], Path], data: Path, figure: Path, digest: str,
               cache: Path) -> Path:
    """``draw`` through ``cache``: a copy of the picture drawn from the same numbers before, else drawn and kept
    (written to a temporary name and renamed, so a reader never meets half a file)."""
    kept = cache / FIGURES_CACHE / f"{figure.stem}-{digest}{figure.suffix}"
    if _drawn_from(kept) == digest:
        shutil.copyfile(kept, figure)
        return figure
    draw(data, figure, {SOURCE_KEY: digest})
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs the next trial a drawing
        kept.parent.mkdir(parents=True, exist_ok=True)
        tmp = kept.with_name(f".{kept.name}.{os.getpid()}.tmp")
        shutil.copyfile(figure, tmp)
        tmp.replace(kept)
    return figure


def draw_pending(folder: Path, cache: Path | None = None) -> list[Path]:
    """Draw the pictures of ``folder`` (a trial's ``artifacts``) that are missing or were drawn from other
    numbers than the folder holds now; returns what it drew. A folder without the numbers is left as it is.
    The check reads the digest each picture carries (not file times, which a copy of the folder resets).

    With ``cache`` (the trial's cache folder), the prior's picture is drawn once per machine and distinct
    matrix: every trial of a data set and prior variant has the same one (0.85 s of matplotlib each, measured
    on the ``quick`` trial); the examples differ per trial and are always drawn."""
    drawn = []
    for figure, data, draw, repeats in ((folder / EXAMPLES_FIGURE, folder / EXAMPLES_DATA, draw_examples, False),
                                        (folder / PRIOR_FIGURE, folder / PRIOR_FILE, draw_prior, True)):
        if data.is_file() and _drawn_from(figure) != (digest := _digest(data)):
            if repeats and cache is not None:
                drawn.append(_draw_kept(draw, data, figure, digest, cache))
            else:
                drawn.append(draw(data, figure, {SOURCE_KEY: digest}))
    return drawn


def is_drawing_data(name: str) -> bool:
    """Whether an artifact is only the numbers behind a picture (not uploaded: the picture is)."""
    return name == EXAMPLES_DATA


__all__ = ["EXAMPLES_DATA", "EXAMPLES_FIGURE", "LOSS_UNIT", "PRIOR_FIGURE", "draw_examples", "draw_pending",
           "draw_prior", "example_columns", "is_drawing_data", "loss_title", "row_label"]
