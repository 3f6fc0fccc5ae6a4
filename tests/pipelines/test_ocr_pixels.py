"""Which pixels stage 2's OCR term sees: never a crop's padding; uncertain (255) pixels per ``ocr.uncertain``."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ocr import ocr_pixel_loss
from pipelines.config import TrialConfig, from_flat
from pipelines.data import Batch
from pipelines.ocr_term import OCRTerm
from pipelines.stage_seg import SegState, _loss_fn

C = 3  # foreground classes


class FixedLogits(nn.Module):
    """A "network" whose logits are a given tensor, whatever the input."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, images: Tensor) -> Tensor:
        return self.logits


def hand_made() -> tuple[Batch, Tensor]:
    """One 3×4 crop: row 0 certain, row 1 uncertain (255 in the pseudo-mask), row 2 padding (255 as well)."""
    masks = torch.tensor([[[0, 1, 1, 0], [255, 255, 255, 255], [255, 255, 255, 255]]])
    padding = torch.zeros(1, 3, 4, dtype=torch.bool)
    padding[:, 2] = True
    tags = torch.tensor([[1, 0, 0]], dtype=torch.uint8)  # class 0 tagged: classes 1 and 2 are out of candidate
    logits = torch.randn(1, C + 1, 3, 4, generator=torch.Generator().manual_seed(0)) * 3
    return Batch(torch.zeros(1, 3, 3, 4), masks, tags, torch.tensor([0]), padding), logits


def stage_ocr(cfg: TrialConfig, batch: Batch, logits: Tensor) -> float:
    """The OCR part of stage 2's loss for ``batch`` with the network's logits fixed to ``logits``."""
    model = FixedLogits(logits)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    train_tags = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.uint8)
    term = OCRTerm(cfg.ocr, train_tags, cfg.seed, torch.device("cpu"))
    state = SegState(model, optimizer, schedule, term, torch.Generator())
    parts = _loss_fn(state, cfg, torch.device("cpu"), lambda x: x)(batch)
    return float(parts["ocr"].detach())


def test_padding_never_counts_and_uncertain_pixels_only_when_included() -> None:
    batch, _ = hand_made()
    exclude, include = batch.ocr_valid(include_uncertain=False), batch.ocr_valid(include_uncertain=True)
    assert exclude is not None and include is not None
    assert exclude[0].tolist() == [[True] * 4, [False] * 4, [False] * 4]
    assert include[0].tolist() == [[True] * 4, [True] * 4, [False] * 4]
    no_padding = Batch(batch.images, batch.masks, batch.tags, batch.index)  # whole images: nothing padded
    assert no_padding.ocr_valid(include_uncertain=True) is None  # every pixel
    assert torch.equal(no_padding.ocr_valid(include_uncertain=False), batch.masks != 255)


@pytest.mark.parametrize("uncertain", ["exclude", "include"])
def test_stage_loss_averages_over_the_chosen_pixels(uncertain: str) -> None:
    batch, logits = hand_made()
    cfg = from_flat({"ocr.uncertain": uncertain, "ocr.selection": "all", "ocr.reduction": "pixels",
                     "ocr.prior": "uniform"})
    rows = 1 if uncertain == "exclude" else 2  # certain row only, or the uncertain row too; padding never
    term = OCRTerm(cfg.ocr, torch.eye(C, dtype=torch.uint8), 0, torch.device("cpu"))
    pixel = ocr_pixel_loss(logits, batch.tags, term.matrix, delta=cfg.ocr.delta, tau=cfg.ocr.tau)[0]  # (3, 4)
    expected = float(pixel[:rows].mean())
    assert stage_ocr(cfg, batch, logits) == pytest.approx(expected, rel=1e-6)
    assert float(pixel[2].mean()) != pytest.approx(expected)  # the padding row would change the figure


def test_the_two_settings_differ_and_exclude_is_the_default() -> None:
    batch, logits = hand_made()
    assert TrialConfig().ocr.uncertain == "exclude"
    base = {"ocr.selection": "all", "ocr.prior": "uniform"}
    exclude = stage_ocr(from_flat(base), batch, logits)
    include = stage_ocr(from_flat({**base, "ocr.uncertain": "include"}), batch, logits)
    assert exclude != pytest.approx(include)
    with pytest.raises(ValueError, match=r"ocr.uncertain = 'some' is not allowed; choose one of \['exclude', "):
        from_flat({"ocr.uncertain": "some"})
