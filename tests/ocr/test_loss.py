"""The OCR loss against the spec: reference values, hand computations, gradients, edge cases."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from ocr import GROUPS, IC_MASKINGS, REDUCTIONS, OCRLoss, oc_pixels, ocr_loss, ocr_pixel_loss, prior_matrix
from ocr._reference import ocr_loss_reference

TAGS = torch.tensor([[1, 0, 1, 0]])  # I = {0, 1, 3}, O = {2, 4}


def _pixel(values: list[float], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype).view(1, -1, 1, 1)


@pytest.mark.parametrize(("logits", "top1", "rank_bg"), [
    ([1, 2, 0.5, 3, -1], 0.078890, 6.671114),
    ([2, 1, 3, 0, -1], 1.313262, 9.758681),
    ([1, 2, 4, 3, -1], 1.313262, 10.169884),
])
def test_reference_values_released_code(logits: list[float], top1: float, rank_bg: float) -> None:
    z = _pixel(logits)
    got_top1 = ocr_loss(z, TAGS, None, delta=0.0, tau=0.2, selection="all", group="top1")
    got_rank = ocr_loss(z, TAGS, None, delta=6.0, tau=0.2, selection="all", group="rank_bg")
    assert float(got_top1) == pytest.approx(top1, abs=1e-5)
    assert float(got_rank) == pytest.approx(rank_bg, abs=1e-5)


@pytest.mark.parametrize(("logits", "prior", "masking", "expected"), [
    ([1, 2, 0.5, 3, -1], "ones", "zero", 7.419749),
    ([1, 2, 0.5, 3, -1], "ones", "drop", 3.725802),
    ([1, 2, 4, 3, -1], "ones", "zero", 10.176599),
    ([1, 2, 4, 3, -1], "ones", "drop", 8.320221),
    ([1, 2, 4, 3, -1], "eye", "zero", 10.724473),
])
def test_reference_values_paper(logits: list[float], prior: str, masking: str, expected: float) -> None:
    m = torch.ones(5, 5) if prior == "ones" else torch.eye(5)
    got = ocr_loss(_pixel(logits), TAGS, m, delta=6.0, tau=0.2, selection="all", group="paper",
                   ic_masking=masking)
    assert float(got) == pytest.approx(expected, abs=1e-5)


def test_paper_hand_computed_keep_set() -> None:
    # p = softmax([1, 2, 0.5, 3, -1]); anchor = channel 3 (p≈0.61); with M = identity only the anchor
    # survives (p_a − 0 > τ for the others), so g = [0, 0, 3] under zero masking.
    z = [1.0, 2.0, 0.5, 3.0, -1.0]
    ic = math.log(1 + 1 + math.exp(-3.0))
    oc = math.log(math.exp(0.5) + math.exp(-1.0))
    expected = math.log1p(math.exp(ic + oc + 1.5))
    got = ocr_loss(_pixel(z), TAGS, torch.eye(5), delta=1.5, tau=0.2, selection="all")
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_oc_test_uses_masking_not_multiplication() -> None:
    # All logits negative: the appendix's "multiply non-tag logits by 0" would make the clean argmax an
    # untagged class; the spec's test is just "the argmax is not a candidate".
    z = _pixel([-5.0, -1.0, -3.0, -4.0, -6.0])  # argmax = channel 1, a candidate
    assert not bool(oc_pixels(z, TAGS).any())
    z = _pixel([-5.0, -4.0, -1.0, -3.0, -6.0])  # argmax = channel 2, out of candidate
    assert bool(oc_pixels(z, TAGS).all())


def _random_case(seed: int, b: int = 3, c: int = 6, h: int = 5, w: int = 4) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(b, c + 1, h, w, generator=gen, dtype=torch.float64) * 3
    tags = torch.randint(0, 2, (b, c), generator=gen)
    tags[0] = 1  # one image with every class tagged (O empty)
    prior = prior_matrix(torch.randint(0, 2, (40, c), generator=gen), "cooc_minmax").double()
    valid = torch.rand(b, h, w, generator=gen) > 0.2
    return z, tags, prior, valid


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("selection", ["oc", "all"])
@pytest.mark.parametrize("ic_masking", IC_MASKINGS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_per_pixel_reference(group: str, selection: str, ic_masking: str, reduction: str) -> None:
    z, tags, prior, valid = _random_case(1)
    kw = dict(delta=2.0, tau=0.3, selection=selection, group=group, ic_masking=ic_masking,
              reduction=reduction, valid=valid)
    assert torch.allclose(ocr_loss(z, tags, prior, **kw), ocr_loss_reference(z, tags, prior, **kw),
                          atol=1e-10)


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("ic_masking", IC_MASKINGS)
@pytest.mark.parametrize("fast_mode", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["fast", "full"])
def test_gradcheck_float64(group: str, ic_masking: str, fast_mode: bool) -> None:
    """Against finite differences: the whole Jacobian under ``slow``; in the fast set PyTorch's fast mode,
    which checks it along random directions (one backward pass instead of one per input)."""
    z, tags, prior, valid = _random_case(2, b=2, c=4, h=3, w=3)
    z.requires_grad_(True)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return ocr_loss(x, tags, prior, delta=1.0, tau=0.3, selection="all", group=group,
                        ic_masking=ic_masking, valid=valid)

    assert torch.autograd.gradcheck(fn, (z,), eps=1e-6, atol=1e-5, fast_mode=fast_mode)


def test_all_tags_gives_zero_loss_and_zero_grad() -> None:
    z = (torch.randn(2, 5, 4, 4) * 10).requires_grad_(True)
    tags = torch.ones(2, 4)
    for group in GROUPS:
        loss = ocr_loss(z, tags, torch.ones(5, 5), delta=6.0, tau=0.2, selection="all", group=group)
        (grad,) = torch.autograd.grad(loss, z)
        assert loss.item() == 0.0
        assert torch.equal(grad, torch.zeros_like(grad))


def test_no_tags_only_background_is_candidate() -> None:
    z = _pixel([0.0, 1.0, 2.0, 3.0, 4.0])
    tags = torch.zeros(1, 4)
    # I = {0}: the anchor is background and the group is {z_0}; O = all foreground.
    expected = math.log1p(math.exp(-0.0) * sum(math.exp(v + 6.0) for v in (1, 2, 3, 4)))
    got = ocr_loss(z, tags, torch.ones(5, 5), delta=6.0, tau=0.2, selection="all")
    assert float(got) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("scale", [1e3, 1e4])
def test_huge_logits_are_stable(group: str, scale: float) -> None:
    gen = torch.Generator().manual_seed(3)
    z = (torch.randn(2, 7, 6, 6, generator=gen) * scale).requires_grad_(True)
    tags = torch.randint(0, 2, (2, 6), generator=gen)
    loss = ocr_loss(z, tags, torch.ones(7, 7), delta=6.0, tau=0.2, selection="all", group=group)
    (grad,) = torch.autograd.grad(loss, z)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert loss.item() > 0


def test_huge_logits_value_is_linear_regime() -> None:
    # softplus(x) = x for large x: top1 with an OC logit 1e4 above the best IC logit.
    z = _pixel([0.0, 0.0, 1e4, 0.0, 0.0])
    got = ocr_loss(z, TAGS, None, delta=0.0, tau=0.2, selection="all", group="top1")
    assert float(got) == pytest.approx(1e4, rel=1e-6)


@pytest.mark.parametrize("group", GROUPS)
def test_batch_order_invariance(group: str) -> None:
    z, tags, prior, valid = _random_case(4, b=5)
    perm = torch.tensor([3, 0, 4, 1, 2])
    kw = dict(delta=3.0, tau=0.2, selection="all", group=group, valid=valid)
    a = ocr_loss(z, tags, prior, **kw)
    kw["valid"] = valid[perm]
    b = ocr_loss(z[perm], tags[perm], prior, **kw)
    assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("group", GROUPS)
def test_only_oc_image_without_oc_pixel_has_zero_loss_and_grad(group: str) -> None:
    z = torch.randn(1, 5, 4, 4)
    z[:, 1] += 20.0  # channel 1 (tagged) wins everywhere: no OC pixel
    z.requires_grad_(True)
    loss = ocr_loss(z, TAGS, torch.ones(5, 5), delta=6.0, tau=0.2, selection="oc", group=group)
    (grad,) = torch.autograd.grad(loss, z)
    assert loss.item() == 0.0
    assert torch.equal(grad, torch.zeros_like(grad))


def test_selection_oc_counts_only_oc_pixels() -> None:
    z = torch.zeros(1, 5, 1, 2)
    z[0, 1, 0, 0] = 5.0  # pixel 0: in-candidate
    z[0, 2, 0, 1] = 5.0  # pixel 1: out-of-candidate
    pixel = ocr_pixel_loss(z, TAGS, torch.ones(5, 5), delta=6.0, tau=0.2)  # (1, 1, 2)
    got = ocr_loss(z, TAGS, torch.ones(5, 5), delta=6.0, tau=0.2, selection="oc")
    assert float(got) == pytest.approx(float(pixel[0, 0, 1]) / 2, rel=1e-6)
    got_sel = ocr_loss(z, TAGS, torch.ones(5, 5), delta=6.0, tau=0.2, selection="oc", reduction="selected")
    assert float(got_sel) == pytest.approx(float(pixel[0, 0, 1]), rel=1e-6)


def test_valid_mask_removes_pixels_from_sum_and_divisor() -> None:
    z, tags, prior, _ = _random_case(5)
    valid = torch.zeros(z.shape[0], z.shape[2], z.shape[3], dtype=torch.bool)
    valid[:, 0, 0] = True
    pixel = ocr_pixel_loss(z, tags, prior, delta=1.0, tau=0.2)
    got = ocr_loss(z, tags, prior, delta=1.0, tau=0.2, selection="all", valid=valid)
    assert float(got) == pytest.approx(float(pixel[:, 0, 0].mean()), rel=1e-9)
    none_valid = torch.zeros_like(valid)
    assert float(ocr_loss(z, tags, prior, delta=1.0, tau=0.2, selection="all", valid=none_valid)) == 0.0


def test_selection_none_is_zero() -> None:
    z = torch.randn(2, 5, 3, 3)
    assert float(ocr_loss(z, torch.zeros(2, 4), torch.ones(5, 5), delta=6, tau=0.2, selection="none")) == 0.0


def test_half_precision_logits_are_computed_in_float32() -> None:
    z = (torch.randn(1, 5, 3, 3) * 100).to(torch.bfloat16)
    loss = ocr_loss(z, TAGS, torch.ones(5, 5), delta=6.0, tau=0.2, selection="all")
    ref = ocr_loss(z.float(), TAGS, torch.ones(5, 5), delta=6.0, tau=0.2, selection="all")
    assert loss.dtype == torch.float32 and torch.allclose(loss, ref)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"selection": "some"}, "selection"),
    ({"group": "full"}, "group"),
    ({"ic_masking": "none"}, "ic_masking"),
    ({"reduction": "mean"}, "reduction"),
])
def test_bad_arguments_name_the_argument(kwargs: dict[str, str], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ocr_loss(_pixel([0.0] * 5), TAGS, torch.ones(5, 5), delta=6.0, tau=0.2, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("logits", "tags", "prior", "match"), [
    (torch.zeros(1, 5, 2), TAGS, torch.ones(5, 5), "logits"),
    (torch.zeros(1, 5, 2, 2), torch.zeros(1, 3), torch.ones(5, 5), "tags"),
    (torch.zeros(1, 5, 2, 2), TAGS, torch.ones(4, 4), "prior"),
    (torch.zeros(1, 5, 2, 2), TAGS, None, "prior"),
])
def test_bad_shapes_raise(logits: torch.Tensor, tags: torch.Tensor, prior: torch.Tensor | None,
                          match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ocr_loss(logits, tags, prior, delta=6.0, tau=0.2)


def test_module_matches_function_and_moves_prior() -> None:
    z, tags, prior, valid = _random_case(6)
    module = OCRLoss(prior, delta=2.0, tau=0.25, selection="all", group="paper").double()
    expected = ocr_loss(z, tags, prior, delta=2.0, tau=0.25, selection="all", valid=valid)
    assert torch.allclose(module(z, tags, valid), expected)
    assert "prior" in dict(module.named_buffers())
    other = torch.ones_like(prior)
    assert torch.allclose(module(z, tags, valid, prior=other),
                          ocr_loss(z, tags, other, delta=2.0, tau=0.25, selection="all", valid=valid))


def test_loss_decreases_oc_logit_under_gradient_descent() -> None:
    z = _pixel([0.0, 1.0, 3.0, 0.5, -1.0]).requires_grad_(True)  # an OC pixel (channel 2 wins)
    loss = ocr_loss(z, TAGS, torch.ones(5, 5), delta=0.0, tau=0.2, selection="oc")
    (grad,) = torch.autograd.grad(loss, z)
    assert float(grad[0, 2]) > 0  # pushes the OC logit down
    assert float(grad[0, 1]) < 0 or float(grad[0, 3]) < 0  # pulls some IC logit up


def test_stable_form_equals_literal_form_for_small_logits() -> None:
    # τ = −1: p_a − p_k < −1 never holds, so K = {anchor} and every other IC logit is zeroed.
    z, tags, prior, _ = _random_case(7)
    got = ocr_pixel_loss(z, tags, torch.ones_like(prior), delta=0.5, tau=-1.0, group="paper")
    cand = torch.cat([torch.ones(z.shape[0], 1), tags.double()], dim=1).bool()[:, :, None, None]
    anchor = torch.softmax(z, 1).masked_fill(~cand, -1).argmax(1, keepdim=True)
    g = torch.where(torch.arange(z.shape[1]).view(1, -1, 1, 1) == anchor, z, torch.zeros_like(z))
    se_ic = (torch.exp(-g) * cand).sum(1)
    se_oc = (torch.exp(z + 0.5) * ~cand).sum(1)
    assert torch.allclose(got, torch.log1p(se_ic * se_oc), atol=1e-10)


@pytest.mark.parametrize("pack_below", [0.0, 1.0])  # never pack / always pack the OC pixels
@pytest.mark.parametrize("group", ["paper", "top1", "rank_bg"])
@pytest.mark.parametrize("reduction", ["pixels", "selected"])
@pytest.mark.parametrize("with_valid", [False, True])
def test_oc_selection_equals_every_pixel_masked(group: str, reduction: str, with_valid: bool, pack_below: float,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The OC-only path (pixels packed before the loss) gives the value and gradient of the plain definition."""
    import ocr._loss
    from ocr import reduce_pixel_loss

    monkeypatch.setattr(ocr._loss, "PACK_BELOW", pack_below)

    gen = torch.Generator().manual_seed(3)
    logits = (torch.randn(4, 6, 9, 7, generator=gen, dtype=torch.float64) * 3).requires_grad_(True)
    tags = torch.tensor([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]])
    prior = prior_matrix((torch.rand(30, 5, generator=gen) < 0.4).long(), "cooc_minmax").double()
    valid = torch.rand(4, 9, 7, generator=gen) < 0.8 if with_valid else None
    kw: dict[str, Any] = {"delta": 2.0, "tau": 0.3, "group": group}
    fast = ocr_loss(logits, tags, prior, selection="oc", reduction=reduction, valid=valid, **kw)
    (g_fast,) = torch.autograd.grad(fast, logits)
    chosen = oc_pixels(logits, tags) if valid is None else oc_pixels(logits, tags) & valid
    plain = reduce_pixel_loss(ocr_pixel_loss(logits, tags, prior, **kw), chosen, valid, reduction)
    (g_plain,) = torch.autograd.grad(plain, logits)
    assert 0 < int(chosen.sum()) < chosen.numel()
    assert fast.item() == pytest.approx(plain.item(), rel=1e-12, abs=1e-12)
    assert torch.allclose(g_fast, g_plain, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oc_pixels_matches_the_argmax_definition_with_ties(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randint(-2, 3, (5, 7, 6, 6), generator=gen).float()  # many exact ties
    logits[0] = 0.0  # an untrained network's constant output: every channel ties
    tags = (torch.rand(5, 6, generator=gen) < 0.4).long()
    cand = torch.cat([torch.ones(5, 1, dtype=torch.bool), tags.bool()], dim=1)
    pred = logits.argmax(dim=1)  # ties to the lowest id
    expected = ~torch.gather(cand, 1, pred.flatten(1)).view_as(pred)
    assert torch.equal(oc_pixels(logits, tags), expected)
    assert not oc_pixels(logits, tags)[0].any()  # background wins the all-tie


def test_paper_without_a_prior_never_falls_back_to_another_group() -> None:
    """Inside the loss too (not only at the argument checks): a missing prior is an error, not rank_bg."""
    from ocr._loss import _pixel_terms

    logits = torch.randn(1, 4, 3, 3)
    tags = torch.tensor([[1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="needs a prior"):
        _pixel_terms(logits, tags, None, 1.0, 0.2, "paper", "zero")
