"""Full-resolution evaluation: a hand-computed case, multi-scale and flip, upsampled logits, dense CRF."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from pipelines.config import ConfigError, EvalConfig, Protocol, from_flat
from pipelines.crf import crf_available, crf_scores
from pipelines.data import Batch
from pipelines.evaluation import evaluate, predict_full
from pipelines.models import SegNet

K = 3


def _label_model(x: Tensor) -> Tensor:
    """A 'network' predicting the label written in the image's first channel: logits ``(B, K, H, W)``."""
    return 5.0 * F.one_hot(x[:, 0].round().long(), K).permute(0, 3, 1, 2).float()


def _batch(pred: list[list[int]], truth: list[list[int]], tags: list[int]) -> Batch:
    image = torch.tensor(pred, dtype=torch.float32)[None, None].expand(1, 3, -1, -1)
    return Batch(image, torch.tensor(truth)[None], torch.tensor([tags], dtype=torch.uint8), torch.tensor([0]))


def test_full_resolution_metrics_equal_a_hand_computed_confusion_matrix() -> None:
    landscape = _batch([[0, 1, 1], [2, 2, 0]], [[0, 1, 255], [2, 1, 0]], [1, 1])
    portrait = _batch([[0, 0], [1, 0], [2, 2]], [[0, 0], [1, 0], [255, 0]], [1, 0])
    scores = evaluate(_label_model, [landscape, portrait], K, EvalConfig())
    # rows = truth, columns = prediction; 255 skipped
    expected = torch.tensor([[2 + 3, 0, 0 + 1], [0, 1 + 1, 1 + 0], [0, 0, 1 + 0]])
    assert torch.equal(scores[""].conf, expected)
    metrics = scores[""].compute()
    assert math.isclose(metrics["miou"], (5 / 6 + 2 / 3 + 1 / 3) / 3)  # TP / (TP + FP + FN) per class
    # portrait is tagged with class 1 only: its two pixels predicted 2 are out of candidate (one valid)
    assert math.isclose(metrics["oc_rate"], 1 / 10) and math.isclose(metrics["oc_image_rate"], 1 / 2)


def test_coarse_logits_are_upsampled_to_the_full_image() -> None:
    def coarse(x: Tensor) -> Tensor:  # predicts at half resolution
        return _label_model(x)[:, :, ::2, ::2]

    batch = _batch([[1, 1, 2, 2], [1, 1, 2, 2]], [[1, 1, 2, 2], [1, 1, 2, 2]], [1, 1])
    assert predict_full(coarse, batch.images, (1.0,), False).shape == (1, K, 2, 4)
    assert evaluate(coarse, [batch], K, EvalConfig())[""].compute()["pixel_acc"] == 1.0


@pytest.fixture(scope="module")
def net() -> SegNet:
    torch.manual_seed(0)
    return SegNet(3, K - 1, 4).eval()


def _random_batches() -> list[Batch]:
    gen = torch.Generator().manual_seed(1)
    sizes = ((20, 28), (32, 24))  # portrait and landscape
    return [Batch(torch.rand(1, 3, h, w, generator=gen), torch.randint(0, K, (1, h, w), generator=gen),
                  torch.tensor([[1, 0]], dtype=torch.uint8), torch.tensor([i])) for i, (h, w) in enumerate(sizes)]


def test_one_scale_without_flip_is_the_plain_prediction(net: SegNet) -> None:
    batches = _random_batches()
    with torch.no_grad():
        for b in batches:
            assert torch.equal(predict_full(net, b.images, (1.0,), False), net(b.images))
        for b in batches:  # the averaging path over two identical views: the same log-probabilities
            doubled = predict_full(net, b.images, (1.0, 1.0), False)
            assert torch.allclose(doubled, net(b.images).log_softmax(1), atol=1e-5)
    assert EvalConfig().scale_list == (1.0,)
    assert EvalConfig(scale_min=0.5, scale_max=1.5).scale_list == (0.5, 0.75, 1.0, 1.25, 1.5)
    assert EvalConfig(scale_min=0.5, scale_max=2.0, scale_step=0.5).scale_list == (0.5, 1.0, 1.5, 2.0)
    with pytest.raises(ValueError, match="scale_max"):
        EvalConfig(scale_min=1.5, scale_max=1.0)


def test_flip_of_a_mirror_symmetric_network_changes_nothing() -> None:
    torch.manual_seed(0)
    pointwise = torch.nn.Conv2d(3, K, 1).eval()  # 1×1: commutes with mirroring
    batches = _random_batches()
    plain = evaluate(pointwise, batches, K, EvalConfig())[""]
    flipped = evaluate(pointwise, batches, K, EvalConfig(flip=True))[""]
    assert torch.equal(plain.conf, flipped.conf)


def test_multi_scale_averages_probabilities(net: SegNet) -> None:
    x = _random_batches()[0].images
    with torch.no_grad():
        full = predict_full(net, x, (0.5, 1.0, 1.5), True)
        views = []
        for s in (0.5, 1.0, 1.5):
            xs = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False, recompute_scale_factor=True)
            for m in (False, True):
                out = net(xs.flip(-1) if m else xs)
                out = out.flip(-1) if m else out
                views.append(F.interpolate(out, size=x.shape[2:], mode="bilinear", align_corners=False).softmax(1))
    assert full.shape == (1, K, 20, 28)
    assert torch.allclose(full.exp(), torch.stack(views).mean(0), atol=1e-6)


@pytest.mark.skipif(not crf_available(), reason="pydensecrf2 is not installed (pip install pydensecrf2)")
def test_dense_crf_keeps_confident_labels_and_is_reported_beside_raw() -> None:
    image = torch.zeros(1, 16, 24, 3, dtype=torch.uint8)
    image[:, :, 12:] = 200  # two flat colour regions
    probs = torch.full((1, 2, 16, 24), 0.1)
    probs[:, 0, :, :12] = 0.9
    probs[:, 1, :, 12:] = 0.9
    refined = crf_scores(image, probs)
    assert torch.equal(refined.argmax(1), probs.argmax(1))
    probs[:, :, 8, 4] = torch.tensor([0.45, 0.55])  # one unsure pixel in region 0 is pulled back to 0
    assert int(crf_scores(image, probs).argmax(1)[0, 8, 4]) == 0
    batch = Batch(torch.rand(1, 3, 16, 24), torch.zeros(1, 16, 24, dtype=torch.long),
                  torch.tensor([[1, 0]], dtype=torch.uint8), torch.tensor([0]))
    scores = evaluate(_label_model, [batch], K, EvalConfig(crf=True),
                      pictures=lambda x: (x[:, :3].permute(0, 2, 3, 1) * 255).to(torch.uint8))
    assert set(scores) == {"", "crf"}


def test_logit_fusion_averages_logits_and_prob_fusion_probabilities() -> None:
    def two_views(x: Tensor) -> Tensor:  # logits that differ between the plain and the mirrored view
        ramp = torch.arange(x.shape[-1], dtype=torch.float32).expand(x.shape[0], 1, *x.shape[2:])
        return torch.cat([ramp, -ramp, torch.zeros_like(ramp)], dim=1)

    images = torch.zeros(1, 3, 2, 4)
    logit = predict_full(two_views, images, (1.0,), True, "logit")
    plain, mirrored = two_views(images), two_views(images).flip(-1)
    assert torch.allclose(logit, (plain + mirrored) / 2)
    prob = predict_full(two_views, images, (1.0,), True, "prob")
    assert torch.allclose(prob.exp(), (plain.softmax(1) + mirrored.softmax(1)) / 2)
    assert not torch.allclose(prob.softmax(1), logit.softmax(1))
    with pytest.raises(ValueError, match=r"fusion = 'max' is not allowed"):
        predict_full(two_views, images, (1.0,), True, "max")


def test_the_final_protocol_is_parsed_and_described() -> None:
    cfg = from_flat({"eval.final_scales": "0.5, 0.75,1,1.25,1.5", "eval.fusion": "logit"}).eval
    assert cfg.final == Protocol((0.5, 0.75, 1.0, 1.25, 1.5), True, False, "logit")
    assert cfg.final.describe() == "scales 0.5/0.75/1/1.25/1.5, flip, logit fusion"
    assert cfg.per_report == Protocol((1.0,), False, False, "logit") and EvalConfig().final is None
    for bad in ("0.5;1", "0.05", "a"):
        with pytest.raises(ConfigError, match=r"eval.final_scales = .* must list scales in \[0.1, 4\]"):
            from_flat({"eval.final_scales": bad})
