"""The trial config: flat keys, coercion, validation messages."""

from __future__ import annotations

import pytest

from pipelines.config import TrialConfig, flat_keys, from_flat, nested_to_flat, to_flat


def test_defaults_round_trip() -> None:
    cfg = TrialConfig()
    assert from_flat(to_flat(cfg)) == cfg
    assert set(to_flat(cfg)) == set(flat_keys())


def test_strings_from_the_command_line_are_coerced() -> None:
    cfg = from_flat({"ocr.delta": "2.5", "seg.epochs": "3", "amp": "false"})
    assert (cfg.ocr.delta, cfg.seg.epochs, cfg.amp) == (2.5, 3, False)


@pytest.mark.parametrize(("values", "match"), [
    ({"ocr.detla": 1.0}, r"unknown key 'ocr.detla'; did you mean 'ocr.delta'"),
    ({"ocr.selection": "some"}, r"ocr.selection = 'some' is not allowed"),
    ({"seg.epochs": 0}, r"seg.epochs = 0 must be"),
    ({"seg.epochs": 2.5}, r"seg.epochs = 2.5 must be an integer"),
    ({"ocr.delta": "big"}, r"ocr.delta = 'big' must be a number"),
    ({"amp": "maybe"}, r"amp = 'maybe' must be true or false"),
    ({"data.name": "voc"}, r"data.root is empty"),
    ({"ocr.tau": float("nan")}, r"ocr.tau"),
    ({"seg.lr": -1}, r"seg.lr = -1.0 must be in \[0.0, 10.0\]"),
    ({"seg.batch_size": 0}, r"seg.batch_size = 0 must be a finite number >= 1"),
    ({"seg.weight_decay": -5}, r"seg.weight_decay = -5.0 must be a finite number >= 0.0"),
])
def test_bad_values_name_the_key(values: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        from_flat(values)


def test_nested_to_flat() -> None:
    assert nested_to_flat({"ocr": {"delta": 1}, "seed": 2}) == {"ocr.delta": 1, "seed": 2}


def test_seg_init_auto_follows_what_stage_1_allows() -> None:
    assert TrialConfig().seg.init == "auto" and TrialConfig().seg_init == "cam"  # tiny nets of equal width
    assert from_flat({"seg.width": 8, "cam.width": 4}).seg_init == "scratch"  # the encoder would not fit
    deeplab = {"model.name": "deeplab", "model.backbone": "resnet18"}
    assert from_flat({**deeplab, "model.cam_backbone": "resnet18"}).seg_init == "cam"
    assert from_flat({**deeplab, "model.cam_backbone": "resnet50"}).seg_init == "scratch"
    assert from_flat({"seg.init": "scratch"}).seg_init == "scratch"  # as given
