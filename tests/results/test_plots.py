"""What the report's figures show, read from the drawn matplotlib figures: n per point and the baseline line
in the sensitivity plots, one line per trial in the parallel coordinates, class names on the prior heat maps,
one colour per cell in every figure, legends no wider than their axes; and the files: a PNG of at least 150 dpi
with a PDF beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
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
    assert f"baseline none: search mean, n = {len(base)}" in [t.get_text() for t in ax.get_legend().texts]
    counts = [int(t.get_text().removeprefix("n=")) for t in ax.texts if t.get_text().startswith("n=")]
    ocr = done[done["params.ocr.selection"].astype(str) != "none"]
    assert sum(counts) == len(ocr)  # every completed OCR trial is counted in exactly one point


def test_sensitivity_plot_shows_every_search_trial_at_the_epoch_it_reached(synthetic: Dataset, tmp_path: Path,
                                                                           figures: list[Any]) -> None:
    """Issue 21: the trials ASHA stopped are evidence too: hollow, with the epoch they reached."""
    plots.metric_vs_param(synthetic, "ocr.delta", tmp_path / "d.png")
    ax = figures[0].axes[0]
    trials = synthetic.trials
    ocr = trials[trials["params.ocr.selection"].astype(str) != "none"]
    stopped = ocr[ocr["stop_reason"].astype(str) == "early_stopped"]
    finished = ocr[ocr["stop_reason"].astype(str) == "completed"]
    assert len(stopped) > 0
    hollow = sum(len(c.get_offsets()) for c in ax.collections if len(c.get_offsets())
                 and len(c.get_facecolors()) == 0)
    filled = sum(len(c.get_offsets()) for c in ax.collections if len(c.get_offsets()) and len(c.get_facecolors()))
    assert hollow == len(stopped) and filled == len(finished)
    marks = sorted(t.get_text() for t in ax.texts if t.get_text().startswith("e"))
    assert marks == sorted(f"e{e}" for e in stopped["epochs"])


def _confirmed(ds: Dataset) -> Dataset:
    """``ds`` with a confirm phase: each cell's best completed setting run again on its seeds, one of them
    (seed 0) the very run the search made."""
    import dataclasses

    from results._tables import best_settings

    done = completed(ds)
    best = best_settings(ds)
    rows = []
    for cell, setting in best.items():
        mine = done[(done["cell"].astype(str) == cell) & (done["setting"] == setting)]
        for _, row in mine.iterrows():
            rows.append(row.to_dict() | {"trial_id": f"c{row['trial_id']}", "phase": "confirm",
                                         "final_val_miou": row["final_val_miou"] + 0.001 * row["seed"]})
    trials = pd.concat([ds.trials, pd.DataFrame(rows)], ignore_index=True)
    confirm = {"seeds": [0, 1, 2], "epochs": 8, "metric": "val_miou", "mode": "max",
               "cells": [{"id": c, "settings": [int(s)], "rule": "completed", "epoch": None} for c, s in best.items()]}
    curves = ds.curves.merge(pd.DataFrame({"trial_id": [r["trial_id"][1:] for r in rows],
                                           "new": [r["trial_id"] for r in rows]}), on="trial_id")
    curves = pd.concat([ds.curves, curves.assign(trial_id=curves["new"]).drop(columns="new")], ignore_index=True)
    return dataclasses.replace(ds, trials=trials, curves=curves, info=dataclasses.replace(ds.info, confirm=confirm))


def test_the_baseline_line_is_its_confirm_mean_without_the_search_run_counted_again(synthetic: Dataset) -> None:
    ds = _confirmed(synthetic)
    confirm = ds.trials[(ds.trials["phase"] == "confirm") & (ds.trials["cell"].astype(str) == "ocr.selection=none")]
    cell, mean, n, source = plots.baseline_mean(ds)  # type: ignore[misc]
    assert (cell, n, source) == ("ocr.selection=none", len(confirm), "confirm")
    assert mean == pytest.approx(confirm["final_val_miou"].mean())


def test_the_asha_budget_counts_only_the_search_phase(synthetic: Dataset) -> None:
    """The confirm phase runs without early stopping: its trial-epochs are no part of ASHA's budget."""
    before = plots.budget_by_rung(synthetic)
    after = plots.budget_by_rung(_confirmed(synthetic))
    assert len(_confirmed(synthetic).trials) > len(synthetic.trials)
    pd.testing.assert_frame_equal(before, after)


def test_one_colour_per_cell_in_every_figure_and_legends_no_wider_than_their_axes(
        synthetic: Dataset, tmp_path: Path, figures: list[Any]) -> None:
    from matplotlib.colors import to_rgba

    ds = _confirmed(synthetic)
    colours = plots.cell_colours(ds)
    assert len({to_rgba(c) for c in colours.values()}) == len(colours) == 3
    plots.metric_vs_param(ds, "ocr.delta", tmp_path / "d.png")
    plots.oc_vs_miou(ds, tmp_path / "o.png")
    plots.learning_curves(ds, tmp_path / "l.png")
    by_label = {plots.cell_label(c): to_rgba(v) for c, v in colours.items()}
    for fig in figures[:2]:  # the two scatter plots: a legend entry per cell in its colour
        legend = fig.axes[0].get_legend()
        entries = {t.get_text(): to_rgba(h.get_color()) for t, h in zip(legend.texts, legend.legend_handles,
                                                                         strict=True) if t.get_text() in by_label}
        assert entries and all(by_label[k] == v for k, v in entries.items())
    panels = [ax for ax in figures[2].axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["none", "all", "oc"]
    for ax in panels:  # the chosen setting's thick line in its cell's colour, labelled by δ and τ
        thick = max(ax.lines, key=lambda line: line.get_linewidth())
        assert to_rgba(thick.get_color()) == by_label[ax.get_title()]
        texts = [t.get_text() for t in ax.get_legend().texts]
        assert any(t.startswith("chosen: δ = ") and ", τ = " in t for t in texts) or ax.get_title() == "none"
        assert not any("#" in t for t in texts)  # no "best setting #0"
    renderer = figures[0].canvas.get_renderer()
    for fig in figures:
        fig.canvas.draw()
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is not None:
                assert legend.get_window_extent(renderer).width <= ax.get_window_extent(renderer).width + 0.5


def test_every_figure_is_written_as_a_png_of_at_least_150_dpi_and_a_pdf(synthetic: Dataset, tmp_path: Path) -> None:
    from PIL import Image

    written = plots.report_plots(_confirmed(synthetic), tmp_path / "plots")
    assert len(written) >= 6
    for png in written:
        with Image.open(png) as image:
            assert image.info["dpi"][0] >= 150 and image.width >= 5 * 150  # every figure is ≥ 5 in wide
        vector = png.with_suffix(".pdf")
        assert vector.read_bytes()[:5] == b"%PDF-" and vector.stat().st_size > 1000
        assert plots.plot_caption(png.stem) != png.stem.replace("_", " ")  # each has a caption of its own


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
    heat_maps = [ax for ax in figures[0].axes if ax.images and ax.get_visible()]  # not their colour bars
    assert len(heat_maps) == 2 * len(plots.prior_matrices(synthetic))  # as used and row-normalised: they differ
    for ax in heat_maps:
        assert [t.get_text() for t in ax.get_xticklabels()] == names
        assert [t.get_text() for t in ax.get_yticklabels()] == [str(i) for i in matrix.index]
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("in-candidate class k (column)", "anchor class a (row)")
    assert len({ax.get_title() for ax in heat_maps}) == len(heat_maps)
    images = [ax.images[0].get_array() for ax in heat_maps]
    assert not np.allclose(images[0], images[1])


def test_a_prior_already_min_max_normalised_gets_one_panel(synthetic: Dataset, tmp_path: Path,
                                                           figures: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Min-max normalising a cooc_minmax prior changes nothing: no second, identical panel."""
    names = ["background", "digit0", "digit1"]
    minmax = pd.DataFrame([[1.0, 0.0, 0.0], [0.0, 1.0, 0.25], [0.0, 0.5, 1.0]], index=names, columns=names)
    monkeypatch.setattr(plots, "prior_matrices", lambda ds: {"cooc_minmax": minmax})
    plots.priors(synthetic, tmp_path / "priors.png")
    heat_maps = [ax for ax in figures[0].axes if ax.images and ax.get_visible()]
    assert len(heat_maps) == 1 and heat_maps[0].get_title() == "prior cooc_minmax: M as the loss used it"


def test_the_oc_plot_names_its_definition(synthetic: Dataset, tmp_path: Path, figures: list[Any]) -> None:
    plots.oc_vs_miou(synthetic, tmp_path / "a.png")
    plots.oc_vs_miou(synthetic, tmp_path / "b.png", oc="pixels")
    assert [f.axes[0].get_ylabel() for f in figures] == ["OC rate (% of foreground predictions)",
                                                         "OC rate (% of valid pixels)"]


def test_parallel_coordinates_leave_out_the_confirm_reruns(synthetic: Dataset, tmp_path: Path,
                                                           figures: list[Any]) -> None:
    """The confirm phase runs the chosen setting again on every seed: the search's picture is unchanged."""
    from matplotlib.collections import LineCollection

    plots.parallel_coordinates(synthetic, tmp_path / "a.png")
    plots.parallel_coordinates(_confirmed(synthetic), tmp_path / "b.png")
    counts = [[len(next(c for c in ax.collections if isinstance(c, LineCollection)).get_segments())
               for ax in fig.axes if ax.get_title()] for fig in figures]
    assert counts[0] == counts[1] and sum(counts[0]) > 0
