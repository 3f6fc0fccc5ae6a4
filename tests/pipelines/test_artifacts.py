"""Validation examples: the images with the most out-of-candidate pixels are the ones drawn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from pipelines.artifacts import choose_examples, example_arrays, loss_maps
from pipelines.config import OCRConfig
from pipelines.data import Batch
from pipelines.figures import _draw_row
from pipelines.ocr_term import OCRTerm


def _example(index: int, oc: int) -> Batch:
    """An image whose logits (the identity model) put ``oc`` pixels on class 2, not among its tags."""
    logits = torch.zeros(1, 3, 4, 4)
    logits[0, 1] = 1.0  # class 1 (tagged) everywhere
    logits[0, 2].view(-1)[:oc] = 2.0  # class 2 (not tagged) on the first ``oc`` pixels
    return Batch(logits, None, torch.tensor([[1, 0]], dtype=torch.uint8), torch.tensor([index]))


def test_examples_are_the_images_with_most_oc_pixels_in_their_order() -> None:
    candidates = [_example(i, oc) for i, oc in enumerate([0, 5, 2, 9, 5, 0])]
    chosen = choose_examples(torch.nn.Identity(), candidates, 3)
    assert [(int(ex.index[0]), oc) for ex, oc in chosen] == [(1, 5), (3, 9), (4, 5)]
    assert len(choose_examples(torch.nn.Identity(), candidates[:2], 6)) == 2


class _Constant(torch.nn.Module):
    """The same logits at every pixel, at the input's size: any band in a map would come from the drawing."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, images: Tensor) -> Tensor:
        b, _, h, w = images.shape
        return self.logits.view(1, -1, 1, 1).expand(b, -1, h, w).clone()


class _Portrait:
    """A TrialData stand-in with one 30×12 (portrait) RGB validation image."""

    class_names = ("one", "two")

    def picture(self, images: Tensor) -> np.ndarray:
        return images.permute(1, 2, 0).numpy()


def test_a_portrait_images_loss_maps_are_the_image_itself_without_bands() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = OCRConfig()
    term = OCRTerm(cfg, torch.tensor([[1, 0], [1, 1], [0, 1]], dtype=torch.uint8), 0, torch.device("cpu"))
    masks = torch.zeros(1, 30, 12, dtype=torch.long)
    ex = Batch(torch.rand(1, 3, 30, 12), masks, torch.tensor([[1, 0]], dtype=torch.uint8), torch.tensor([0]))
    model = _Constant([0.5, 1.0, 2.0])  # class two (untagged) wins everywhere: every pixel OC
    fig, axes = plt.subplots(1, 6)
    try:
        arrays_of_row = example_arrays(model, ex, _Portrait(), term, cfg, 0)  # type: ignore[arg-type]
        _draw_row(axes, arrays_of_row, 0, 3)  # what draw_examples does with the saved row
        arrays = [ax.images[0].get_array() for ax in axes]
        assert all(a.shape[:2] == (30, 12) for a in arrays)  # every panel: the image's size, no padding
        assert all(ax.images[0].get_extent() == axes[0].images[0].get_extent() for ax in axes)  # same aspect
        for loss_map in arrays[4:]:
            assert float(loss_map.max()) == float(loss_map.min()) > 0  # constant logits: a constant map
    finally:
        plt.close(fig)
    loss, oc, _ = loss_maps(model, ex, term, cfg)
    assert loss.shape == (30, 12) and bool(oc.all())


def test_a_network_whose_logits_miss_the_images_size_is_refused() -> None:
    cfg = OCRConfig()
    term = OCRTerm(cfg, torch.tensor([[1, 0], [1, 1]], dtype=torch.uint8), 0, torch.device("cpu"))
    ex = Batch(torch.rand(1, 3, 30, 12), None, torch.tensor([[1, 0]], dtype=torch.uint8), torch.tensor([0]))

    def padded(images: Tensor) -> Tensor:  # as a network that padded its input to a square and kept it
        return torch.zeros(1, 3, 30, 30)

    with pytest.raises(ValueError, match=r"logits \(30, 30\) are not at the image's size \(30, 12\)"):
        loss_maps(padded, ex, term, cfg)


def test_deeplab_v3plus_loss_map_of_an_odd_portrait_image_has_its_size() -> None:
    from pipelines.config import from_flat
    from pipelines.models import build_seg_model

    cfg = from_flat({"model.name": "deeplab", "model.backbone": "resnet18", "model.cam_backbone": "resnet18",
                     "model.head": "v3plus", "model.output_stride": 16})
    model = build_seg_model(cfg, 2, 3).eval()  # pads its input to a multiple of 16 inside, crops back
    term = OCRTerm(cfg.ocr, torch.tensor([[1, 0], [1, 1]], dtype=torch.uint8), 0, torch.device("cpu"))
    ex = Batch(torch.randn(1, 3, 65, 33), None, torch.tensor([[1, 0]], dtype=torch.uint8), torch.tensor([0]))
    with torch.no_grad():
        loss, oc, logits = loss_maps(model, ex, term, cfg.ocr)
    assert loss.shape == oc.shape == (65, 33) and logits.shape == (1, 3, 65, 33)
