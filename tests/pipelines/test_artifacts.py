"""Validation examples: the images with the most out-of-candidate pixels are the ones drawn."""

from __future__ import annotations

import torch

from pipelines.artifacts import choose_examples
from pipelines.data import Batch


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
