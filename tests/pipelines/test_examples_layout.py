"""The layout of ``val_examples.png``: which panels a row has, and what a row's label says."""

from __future__ import annotations

from pipelines.figures import LOSS_UNIT, example_columns, row_label


def test_a_baseline_draws_no_loss_maps_of_a_delta_and_tau_it_never_used() -> None:
    assert example_columns("none") == ("image", "ground truth", "prediction", "OC pixels")
    assert example_columns("oc")[4:] == ("OCR loss, all pixels", "OCR loss, OC pixels only")
    assert "logit" in LOSS_UNIT  # the colour bars say what the numbers are


def test_a_row_says_its_image_tags_and_epoch() -> None:
    assert row_label(17, ["digit 3", "person"], 2) == "val image #17\ntags: digit 3, person\nepoch 2"
    assert row_label(0, [], None) == "val image #0\ntags: none"
