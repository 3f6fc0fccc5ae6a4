"""Files a trial leaves next to its checkpoint for people to look at (MLflow uploads them).

- ``class_iou.json``: validation IoU per class, every epoch.
- ``prior.csv`` and ``prior.png``: the prior matrix in force (raw and row-normalised heat maps).
- ``val_examples.png``: a few validation images with ground truth, prediction, out-of-candidate pixels
  and the OCR loss map under "all" and "only OC" selection (like the paper's Fig. S1).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ocr import oc_pixels, ocr_pixel_loss
from pipelines.config import OCRConfig
from pipelines.data import Batch, TrialData
from pipelines.ocr_term import OCRTerm


def write_class_iou(iou: Tensor, class_names: tuple[str, ...], folder: Path,
                    name: str = "class_iou.json") -> Path:
    """Per-class IoU (background first) under the class names as JSON; classes never seen are ``null``."""
    names = ["background", *class_names]
    values = {n: (None if math.isnan(float(v)) else round(float(v), 6))
              for n, v in zip(names, iou, strict=True)}
    path = folder / name
    path.write_text(json.dumps(values, indent=1))
    return path


def write_prior(term: OCRTerm, class_names: tuple[str, ...], folder: Path) -> None:
    """The prior matrix as CSV and as heat maps."""
    names = ["background", *class_names]
    m = term.matrix.detach().cpu().double().numpy()
    header = ",".join(["", *names])
    rows = [",".join([n, *(f"{x:.6g}" for x in row)]) for n, row in zip(names, m, strict=True)]
    (folder / "prior.csv").write_text("\n".join([header, *rows]) + "\n")
    term.draw(class_names, folder / "prior.png")


def _first_images(data: TrialData, device: torch.device, count: int) -> list[Batch]:
    """The first ``count`` validation images, one per batch."""
    out: list[Batch] = []
    for batch in data.val_loader(count, device):
        for i in range(len(batch)):
            masks = None if batch.masks is None else batch.masks[i : i + 1]
            out.append(Batch(batch.images[i : i + 1], masks, batch.tags[i : i + 1], batch.index[i : i + 1]))
        if len(out) >= count:
            break
    return out[:count]


@torch.no_grad()
def write_examples(model: torch.nn.Module, data: TrialData, term: OCRTerm, cfg: OCRConfig, folder: Path,
                   device: torch.device, count: int = 6) -> Path:
    """A grid of validation examples: image, truth, prediction, OC pixels, OCR loss (all / only OC)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    examples = _first_images(data, device, count)
    n = len(examples)
    columns = ("image", "ground truth", "prediction", "OC pixels", "OCR loss (all)", "OCR loss (only OC)")
    fig, axes = plt.subplots(n, len(columns), figsize=(2.2 * len(columns), 2.2 * n), squeeze=False)
    k = len(data.class_names) + 1
    cmaps = ("gray", "tab20", "tab20", "Reds", "magma", "magma")
    for i, ex in enumerate(examples):
        logits = model(ex.images).float().cpu()  # (1, C+1, H, W)
        tags = ex.tags.cpu()
        loss = ocr_pixel_loss(logits, tags, term.matrix.cpu(), delta=cfg.delta, tau=cfg.tau, group=cfg.group,
                              ic_masking=cfg.ic_masking)[0]  # (H, W)
        oc = oc_pixels(logits, tags)[0]
        truth = ex.masks[0].cpu() if ex.masks is not None else torch.full(loss.shape, 255)
        panels = [data.picture(ex.images[0]), _labels(truth, k), logits[0].argmax(0).numpy(),
                  oc.float().numpy(), loss.numpy(), (loss * oc).numpy()]
        for j, (panel, cmap) in enumerate(zip(panels, cmaps, strict=True)):
            ax = axes[i][j]
            labels = j in (1, 2)
            ax.imshow(panel, cmap=cmap, vmin=0 if labels else None, vmax=k - 1 if labels else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=8)
    fig.tight_layout()
    path = folder / "val_examples.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _labels(mask: Tensor, k: int) -> np.ndarray:
    out = mask.long().numpy().astype(np.float64)
    out[out == 255] = np.nan
    return out
