"""The natural-image benchmark's generator: exact masks, VOC-style 255 bands, CAM-like pseudo-masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from benchmarks.natural_images import CLASSES, Degradation, boundary_band, generate, main, make_scene, miou
from pipelines.data._folder import folder_class_names, folder_files


def test_the_band_covers_every_boundary_between_two_labels_and_nothing_else() -> None:
    mask = np.zeros((9, 9), dtype=np.uint8)
    mask[3:6, 3:6] = 2
    band = boundary_band(mask, 1)
    assert band[2:7, 2:7].sum() == band.sum() == 24 and not band[4, 4]  # the centre sees label 2 alone
    assert not boundary_band(mask, 0).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_scene_has_exact_labels_a_band_and_a_degraded_pseudo_mask(seed: int) -> None:
    scene = make_scene(np.random.default_rng(seed), 64, 80, band=2)
    h, w = scene.mask.shape
    assert scene.image.shape == (h, w, 3) and scene.image.dtype == np.uint8 and min(h, w) >= 64 * 0.7 - 1
    labels = set(np.unique(scene.mask).tolist())
    assert 255 in labels and 0 in labels and labels - {0, 255} and labels <= {0, 255, *range(1, len(CLASSES) + 1)}
    core = np.where(scene.mask == 255, 0, scene.mask)
    # no boundary outside the band: within 2 px of a labelled pixel, every labelled pixel has its label
    kept = scene.mask != 255
    high = ndimage.maximum_filter(core, size=5)
    low = ndimage.minimum_filter(np.where(kept, scene.mask, 254), size=5)
    assert (high[kept] == scene.mask[kept]).all() and (low[kept] == scene.mask[kept]).all()
    assert 255 not in scene.pseudo and set(np.unique(scene.pseudo).tolist()) <= set(range(len(CLASSES) + 1))
    assert not np.array_equal(scene.pseudo, core)  # degraded, not a copy


def test_the_degradation_knobs_act() -> None:
    clean = Degradation(miss=0, wrong_class=0, cut=0, spill=0, blur=(0.01, 0.01), threshold=(0.5, 0.5), shift=0)
    scene = make_scene(np.random.default_rng(3), 64, 64, band=2, deg=clean)
    valid = scene.mask != 255
    assert (scene.pseudo[valid] == scene.mask[valid]).mean() > 0.99  # no degradation: the exact mask
    assert (boundary_band(scene.pseudo, 2) == ~valid).mean() > 0.99  # and the band is its boundaries'
    missed = make_scene(np.random.default_rng(3), 64, 64, band=2, deg=Degradation(miss=1.0, spill=0.0))
    assert not missed.pseudo.any()
    wrong = make_scene(np.random.default_rng(3), 64, 64, band=2,
                       deg=Degradation(miss=0, wrong_class=1.0, cut=0, spill=0))
    present = set(np.unique(wrong.mask).tolist()) - {0, 255}
    assert len(present) == 1 or set(np.unique(wrong.pseudo).tolist()) - {0} != present
    if len(present) == 1:
        assert set(np.unique(wrong.pseudo).tolist()) - {0} and not present & set(np.unique(wrong.pseudo).tolist())


def test_miou_ignores_255() -> None:
    truth = np.array([[0, 1], [255, 1]], dtype=np.uint8)
    score, ious = miou([np.array([[0, 1], [1, 0]], dtype=np.uint8)], [truth], 2)
    assert ious == [pytest.approx(0.5), pytest.approx(0.5)] and score == pytest.approx(0.5)


def test_generate_writes_the_folder_layout_the_trials_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "natural"
    assert main(["--out", str(out), "--train", "6", "--val", "3", "--min-side", "48", "--max-side", "64"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert folder_class_names(out) == CLASSES
    train, val = folder_files(out, "train", 0), folder_files(out, "val", 0)
    assert len(train.ids) == 6 and len(val.ids) == 3 and train.masks is not None
    for stem, image, mask in zip(train.ids, train.images, train.masks, strict=True):
        pseudo = Image.open(out / "pseudo" / f"{stem}.png")
        assert pseudo.mode == "P" and Image.open(mask).size == Image.open(image).size == pseudo.size
    assert not (out / "pseudo" / f"{val.ids[0]}.png").exists()
    assert 0.3 < summary["pseudo_miou"] < 1.0 and summary == json.loads((out / "summary.json").read_text())
    again = tmp_path / "again"
    generate(again, 6, 3, min_side=48, max_side=64)
    assert (again / "masks" / f"{train.ids[0]}.png").read_bytes() == Path(train.masks[0]).read_bytes()  # seeded


def test_shape_only_changes_the_colours_and_nothing_else() -> None:
    hued = make_scene(np.random.default_rng(4), 48, 64, band=2)
    shape_only = make_scene(np.random.default_rng(4), 48, 64, band=2, class_hue=False)
    assert np.array_equal(hued.mask, shape_only.mask) and np.array_equal(hued.pseudo, shape_only.pseudo)
    objects = (hued.mask > 0) & (hued.mask != 255)
    assert not np.array_equal(hued.image[objects], shape_only.image[objects])
    assert np.array_equal(hued.image[hued.mask == 0], shape_only.image[hued.mask == 0])
