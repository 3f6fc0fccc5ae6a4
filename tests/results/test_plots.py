"""What the report's figures show, read from the drawn matplotlib figures: n per point and the baseline line
in the sensitivity plots, one line per trial in the parallel coordinates, class names on the prior heat maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from results import Dataset
from results import _plots as plots
from results._tables import completed


@pytest.fixture()
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures the plot functions draw, kept open instead of saved."""
    drawn: list[Any] = []

    def keep(fig: Any, path: Path) -> Path:
        drawn.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    return drawn


def _done(ds: Dataset) -> pd.DataFrame:
    done = completed(ds)
    return done.assign(cell=done["cell"].astype(str))


def test_sensitivity_plot_has_n_per_point_and_the_baseline_mean_as_a_line(synthetic: Dataset, tmp_path: Path,
                                                                         figures: list[Any]) -> None:
    assert plots.metric_vs_param(synthetic, "ocr.delta", tmp_path / "d.png") is not None
    ax = figures[0].axes[0]
    done = _done(synthetic)
    base = done[done["cell"] == "ocr.selection=none"]["final_val_miou"]
    flat = [line for line in ax.lines if len(set(line.get_ydata())) == 1 and len(line.get_ydata()) == 2]
    assert len(flat) == 1 and flat[0].get_ydata()[0] == pytest.approx(100 * base.mean())
    assert f"baseline ocr.selection=none (mean, n = {len(base)})" in [t.get_text() for t in ax.get_legend().texts]
    counts = [int(t.get_text().removeprefix("n=")) for t in ax.texts if t.get_text().startswith("n=")]
    ocr = done[done["params.ocr.selection"].astype(str) != "none"]
    assert sum(counts) == len(ocr)  # every completed OCR trial is counted in exactly one point


def test_parallel_coordinates_draw_one_line_per_completed_trial_through_the_searched_params(
        synthetic: Dataset, tmp_path: Path, figures: list[Any]) -> None:
    from matplotlib.collections import LineCollection

    assert plots.parallel_coordinates(synthetic, tmp_path / "p.png") is not None
    done = _done(synthetic)
    panels = [ax for ax in figures[0].axes if ax.get_title()]
    assert [ax.get_title().split(":")[0] for ax in panels] == ["ocr.selection=all", "ocr.selection=oc"]
    for ax in panels:
        cell = ax.get_title().split(":")[0]
        lines = next(c for c in ax.collections if isinstance(c, LineCollection))
        assert len(lines.get_segments()) == int((done["cell"] == cell).sum())
        assert [t.get_text() for t in ax.get_xticklabels()] == ["δ", "τ (log)", "val_miou (%)"]


def test_the_importance_plot_has_a_panel_per_searched_cell(searched: Dataset, tmp_path: Path,
                                                           figures: list[Any]) -> None:
    assert plots.importance_plot(searched, tmp_path / "i.png") is not None
    titles = [ax.get_title() for ax in figures[0].axes]
    assert [t.split(" (n = ")[0] for t in titles] == ["ocr.selection=all", "ocr.selection=oc"]
    for ax in figures[0].axes:
        assert sorted(t.get_text() for t in ax.get_yticklabels()) == ["δ", "τ"]
        assert sum(bar.get_width() for bar in ax.patches) == pytest.approx(100)


def test_prior_heat_maps_carry_class_names_on_both_axes(synthetic: Dataset, tmp_path: Path,
                                                        figures: list[Any]) -> None:
    assert plots.priors(synthetic, tmp_path / "priors.png") is not None
    matrix = next(iter(plots.prior_matrices(synthetic).values()))
    names = [str(c) for c in matrix.columns]
    assert names[0] == "background" and len(names) > 2
    heat_maps = [ax for ax in figures[0].axes if ax.images]  # not their colour bars
    assert len(heat_maps) == 2 * len(plots.prior_matrices(synthetic))  # raw and normalised per variant
    for ax in heat_maps:
        assert [t.get_text() for t in ax.get_xticklabels()] == names
        assert [t.get_text() for t in ax.get_yticklabels()] == [str(i) for i in matrix.index]


def test_the_oc_plot_names_its_definition(synthetic: Dataset, tmp_path: Path, figures: list[Any]) -> None:
    plots.oc_vs_miou(synthetic, tmp_path / "a.png")
    plots.oc_vs_miou(synthetic, tmp_path / "b.png", oc="pixels")
    assert [f.axes[0].get_ylabel() for f in figures] == ["OC rate (% of foreground predictions)",
                                                         "OC rate (% of valid pixels)"]
