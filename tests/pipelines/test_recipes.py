"""The shipped training recipes (presets): selection, citations, the bias rule and the step decay."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from pipelines.config import ConfigError, from_flat, to_flat
from pipelines.models import build_seg_model
from pipelines.optim import lr_schedule, make_optimizer
from pipelines.presets import PRESETS, load_preset
from pipelines.presets._load import FOLDER

RECIPES = ("deeplabv2-kazuto1011-voc12", "ocr-authors-voc-aug", "ocr-authors-voc")
C = 4


def test_the_named_recipes_ship() -> None:
    assert set(RECIPES) <= set(PRESETS)


@pytest.mark.parametrize("name", RECIPES)
def test_every_key_of_a_recipe_cites_its_source(name: str) -> None:
    leaves = [line for line in (FOLDER / f"{name}.yaml").read_text().splitlines()
              if re.match(r"^\s*[a-z_]+:\s*[^\s#]", line)]  # a key with a value (not a section)
    assert leaves
    for line in leaves:
        assert "#" in line and line.split("#", 1)[1].strip(), f"{name}: {line.strip()!r} cites no source"


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_is_selected_by_name_and_recorded(name: str) -> None:
    cfg = from_flat({"preset": name})
    flat = to_flat(cfg)
    for key, value in load_preset(name).items():  # as the config holds it (model.freeze_bn: true -> "true")
        assert flat[key] == to_flat(from_flat({key: value}))[key], key
    assert cfg.preset == name and flat["preset"] == name


def test_the_recipes_values() -> None:
    k = from_flat({"preset": "deeplabv2-kazuto1011-voc12"})
    assert (k.seg.lr, k.seg.weight_decay, k.seg.batch_size, k.seg.iterations) == (2.5e-4, 5e-4, 10, 20000)
    assert (k.model.head, k.model.lr_schedule, k.model.poly_power, k.model.momentum) == ("v2", "poly", 0.9, 0.9)
    assert (k.model.head_bias_lr_mult, k.model.head_bias_decay) == (20.0, False)
    a = from_flat({"preset": "ocr-authors-voc-aug"})
    assert (a.seg.lr, a.seg.weight_decay, a.seg.batch_size, a.seg.epochs) == (7e-4, 1e-5, 8, 30)
    assert (a.model.head, a.model.momentum, a.model.lr_schedule, a.model.lr_step_gamma) == ("v1", 0.9, "step", 0.1)
    assert (a.data.scale_min, a.data.scale_max, a.amp) == (0.7, 1.3, False)
    v = from_flat({"preset": "ocr-authors-voc"})
    assert (v.model.momentum, v.model.lr_schedule) == (0.0, "constant")


def test_keys_given_beside_a_recipe_win_and_a_base_keeps_its_overrides() -> None:
    cfg = from_flat({"preset": "deeplabv2-kazuto1011-voc12", "seg.lr": 0.1})
    assert (cfg.seg.lr, cfg.seg.weight_decay) == (0.1, 5e-4)
    again = from_flat({"seed": 3}, cfg)  # a grid cell over a spec's trial: the preset is not re-applied
    assert (again.seg.lr, again.seed, again.preset) == (0.1, 3, "deeplabv2-kazuto1011-voc12")
    assert from_flat(to_flat(cfg)) == cfg  # the round trip of a trial's flat config (Ray, the record)


def test_an_unknown_recipe_names_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match=r"preset = 'kazuto' is not a shipped recipe; choose one of") as err:
        from_flat({"preset": "kazuto"})
    assert err.value.key == "preset" and all(name in str(err.value) for name in RECIPES)


def _small(preset: str, **extra: object) -> object:
    return from_flat({"preset": preset, "model.backbone": "resnet18", **extra})


def test_kazuto_biases_train_at_twenty_times_without_decay() -> None:
    cfg = _small("deeplabv2-kazuto1011-voc12")
    model = build_seg_model(cfg, C, 3)  # type: ignore[arg-type]
    optimizer, _ = make_optimizer(model, cfg, "seg", total_iterations=100)  # type: ignore[arg-type]
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"backbone", "head", "head_bias"}
    assert groups["backbone"]["lr"] == pytest.approx(2.5e-4) and groups["backbone"]["weight_decay"] == 5e-4
    assert groups["head"]["lr"] == pytest.approx(2.5e-3) and groups["head"]["weight_decay"] == 5e-4
    assert groups["head_bias"]["lr"] == pytest.approx(5e-3) and groups["head_bias"]["weight_decay"] == 0.0
    aspp = model.head.branches  # type: ignore[attr-defined]
    assert [id(p) for p in groups["head_bias"]["params"]] == [id(conv.bias) for conv in aspp]
    assert [id(p) for p in groups["head"]["params"]] == [id(conv.weight) for conv in aspp]
    # one SGD step: a bias with zero gradient keeps its value (no decay), a weight shrinks
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    with torch.no_grad():
        aspp[0].bias.fill_(1.0)
    weight = aspp[0].weight.detach().clone()
    optimizer.step()
    assert torch.equal(aspp[0].bias, torch.ones_like(aspp[0].bias))
    assert torch.allclose(aspp[0].weight, weight * (1 - 2.5e-3 * 5e-4))


def test_without_the_bias_rule_there_are_two_groups() -> None:
    cfg = _small("ocr-authors-voc-aug")
    optimizer, _ = make_optimizer(build_seg_model(cfg, C, 3), cfg, "seg", 10)  # type: ignore[arg-type]
    assert [g["name"] for g in optimizer.param_groups] == ["backbone", "head"]


def _rates(cfg: object, steps: int) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = lr_schedule(optimizer, cfg, steps)  # type: ignore[arg-type]
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_step_decay_drops_once_at_its_share_of_the_steps() -> None:
    rates = _rates(from_flat({"preset": "ocr-authors-voc-aug"}), 30)  # 30 "epochs" of one step
    assert rates[:21] == [1.0] * 21 and rates[21:] == pytest.approx([0.1] * 9)  # x0.1 after epoch 20
    assert _rates(from_flat({"preset": "ocr-authors-voc"}), 5) == [1.0] * 5
    poly = _rates(from_flat({}), 4)
    assert poly == pytest.approx([(1 - i / 4) ** 0.9 for i in range(4)])


def test_schedule_keys_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"model.lr_schedule = 'cosine' is not allowed"):
        from_flat({"model.lr_schedule": "cosine"})
    with pytest.raises(ConfigError, match=r"model.lr_step_gamma"):
        from_flat({"model.lr_step_gamma": 2.0})
