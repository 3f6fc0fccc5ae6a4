"""The trial's pictures drawn from its saved numbers: what a stopped trial's uploader draws, and when."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipelines.artifacts import write_prior
from pipelines.config import OCRConfig
from pipelines.figures import (
    EXAMPLES_DATA,
    EXAMPLES_FIGURE,
    PRIOR_FIGURE,
    draw_examples,
    draw_pending,
    example_columns,
    is_drawing_data,
    loss_title,
)
from pipelines.ocr_term import OCRTerm
from record import PRIOR_FILE

NAMES = ["digit 0", "digit 1", "digit 2"]


def fake_examples(folder: Path, selection: str = "oc", rgb: bool = False, rows: int = 2) -> Path:
    """A ``val_examples.npz`` as a trial writes it: rows of different sizes, grey or RGB pictures."""
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    meta_rows = []
    for i in range(rows):
        h, w = 20 + 10 * i, 30
        arrays[f"picture_{i}"] = rng.integers(0, 256, (h, w, 3) if rgb else (h, w), dtype=np.uint8)
        truth = rng.integers(0, 4, (h, w)).astype(np.int16)
        truth[0] = 255  # ignored pixels
        arrays[f"truth_{i}"] = truth
        arrays[f"prediction_{i}"] = rng.integers(0, 4, (h, w)).astype(np.int16)
        arrays[f"oc_{i}"] = rng.random((h, w)) < 0.2
        if selection != "none":
            arrays[f"loss_{i}"] = rng.random((h, w)).astype(np.float32)
        meta_rows.append({"index": 7 + i, "tags": NAMES[:i + 1], "oc_pixels": int(arrays[f"oc_{i}"].sum())})
    meta = {"class_names": NAMES, "columns": list(example_columns(selection)), "epoch": 3, "scan": 24,
            "loss": loss_title(selection, 2.0, 0.2), "rows": meta_rows}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / EXAMPLES_DATA
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
    return path


@pytest.mark.parametrize(("selection", "rgb"), [("oc", False), ("none", True)])
def test_examples_are_drawn_from_their_numbers(tmp_path: Path, selection: str, rgb: bool) -> None:
    png = draw_examples(fake_examples(tmp_path, selection, rgb), tmp_path / "out.png")
    with Image.open(png) as image:
        width, height = image.size
    columns = len(example_columns(selection))
    assert width == pytest.approx(110 * (2.5 * columns + 0.6), abs=2)  # one panel per column
    assert height == pytest.approx(110 * (2.3 * 2 + 1.0), abs=2)  # one row per example


def test_a_folder_is_drawn_once_and_again_only_when_its_numbers_change(tmp_path: Path) -> None:
    fake_examples(tmp_path)
    term = OCRTerm(OCRConfig(prior="cooc_raw"), torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1.0]]), 0,
                   torch.device("cpu"))
    write_prior(term, tuple(NAMES), tmp_path)
    assert {p.name for p in draw_pending(tmp_path)} == {EXAMPLES_FIGURE, PRIOR_FIGURE}
    assert (tmp_path / PRIOR_FIGURE).read_bytes()[:4] == b"\x89PNG"
    assert draw_pending(tmp_path) == []  # each picture says it was drawn from these numbers
    copy = tmp_path / "copied"
    shutil.copytree(tmp_path, copy, ignore=shutil.ignore_patterns("copied"))  # new file times, same numbers
    os.utime(copy / EXAMPLES_DATA, ns=(time.time_ns() + 10**9,) * 2)
    assert draw_pending(copy) == []  # a copy (Tune's checkpoint upload) is not drawn again
    fake_examples(tmp_path, rows=1)  # the next epoch's numbers
    assert [p.name for p in draw_pending(tmp_path)] == [EXAMPLES_FIGURE]
    (tmp_path / PRIOR_FIGURE).write_bytes(b"not a picture")
    assert [p.name for p in draw_pending(tmp_path)] == [PRIOR_FIGURE]
    whole = (tmp_path / EXAMPLES_FIGURE).read_bytes()
    (tmp_path / EXAMPLES_FIGURE).write_bytes(whole[: len(whole) // 2])  # its header (and digest) whole, cut after
    assert [p.name for p in draw_pending(tmp_path)] == [EXAMPLES_FIGURE]  # a trial killed while writing it
    assert (tmp_path / EXAMPLES_FIGURE).read_bytes() == whole
    assert draw_pending(tmp_path / "missing") == [] and draw_pending(tmp_path / "other") == []


def test_the_prior_picture_is_drawn_once_per_cache_and_matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every trial of a data set and prior variant has the same matrix: a trial with a cache copies the picture
    an earlier trial drew; another matrix, or a damaged kept copy, is drawn."""
    import pipelines.figures as figures

    calls: list[Path] = []
    real = figures.draw_prior
    monkeypatch.setattr(figures, "draw_prior", lambda *a: calls.append(a[0]) or real(*a))
    cache = tmp_path / "cache"

    def trial(name: str, tags: list[list[float]]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        write_prior(OCRTerm(OCRConfig(prior="cooc_raw"), torch.tensor(tags), 0, torch.device("cpu")), tuple(NAMES),
                    folder)
        assert [p.name for p in draw_pending(folder, cache)] == [PRIOR_FIGURE]
        return folder / PRIOR_FIGURE

    same = [[1, 0, 0], [1, 1, 0], [0, 1, 1.0]]
    first = trial("a", same)
    second = trial("b", same)
    assert len(calls) == 1 and second.read_bytes() == first.read_bytes()  # copied, not drawn
    other = trial("c", [[1, 1, 1], [0, 1, 0], [0, 0, 1.0]])
    assert len(calls) == 2 and other.read_bytes() != first.read_bytes()
    for kept in (cache / figures.FIGURES_CACHE).iterdir():
        kept.write_bytes(kept.read_bytes()[:100])  # truncated
    again = trial("d", same)
    assert len(calls) == 3 and again.read_bytes() == first.read_bytes()  # drawn again, and the same picture
    assert len(list((cache / figures.FIGURES_CACHE).iterdir())) == 2  # one per matrix, no temporary left


def test_the_prior_csv_names_its_variant_and_still_reads_as_a_matrix(tmp_path: Path) -> None:
    tags = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1.0]])
    term = OCRTerm(OCRConfig(prior="cooc_raw"), tags, 0, torch.device("cpu"))
    table = pd.read_csv(write_prior(term, tuple(NAMES), tmp_path), index_col=0)
    assert table.index.name == "cooc_raw"
    assert list(table.columns) == list(table.index) == ["background", *NAMES]
    np.testing.assert_allclose(table.to_numpy(), term.matrix.double().numpy(), rtol=1e-5)
    assert (tmp_path / PRIOR_FILE).is_file() and not (tmp_path / PRIOR_FIGURE).exists()  # drawn later


def test_only_the_numbers_behind_a_picture_stay_off_the_upload() -> None:
    assert is_drawing_data(EXAMPLES_DATA)
    assert not any(is_drawing_data(n) for n in (EXAMPLES_FIGURE, PRIOR_FILE, "val_examples.json", "class_iou.json"))
