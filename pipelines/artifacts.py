"""Files a trial leaves next to its checkpoint for people to look at (MLflow uploads them).

- ``class_iou.json``: validation IoU per class, every epoch.
- ``prior.csv`` and ``prior.png``: the prior matrix in force (raw and row-normalised heat maps).
- ``val_examples.png``: the validation images with the most out-of-candidate pixels, with ground truth,
  prediction, OC pixels and, when the trial's OCR loss is on, its per-pixel map under "all" and "only OC"
  selection (like the paper's Fig. S1; a baseline has no loss maps: its δ and τ do nothing), a class legend,
  colour bars labelled with the loss's unit, and per row the image's index, its tags and the epoch;
  ``val_examples.json`` names them. Written every evaluated
  epoch, so a trial ASHA stops has them at the epoch it stopped. Every panel of a row is the whole image at
  its own resolution and aspect ratio (nothing padded or cropped). With DeepLab-v2's ASPP (dilations 6 to
  24 at output stride 8: taps 48 to 192 px away) the logits change where the dilated taps leave the image,
  so a loss map can show bands parallel to the edges at those distances (full-width ones on a portrait
  image, whose narrow side every large tap overshoots) that the argmax does not: the network's output,
  not an artefact of the drawing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ocr import oc_pixels, ocr_pixel_loss
from pipelines.config import OCRConfig
from pipelines.data import Batch, TrialData
from pipelines.ocr_term import OCRTerm
from record import OCR_OFF, PRIOR_FILE


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
    (folder / PRIOR_FILE).write_text("\n".join([header, *rows]) + "\n")
    term.draw(class_names, folder / "prior.png")


def _images(data: TrialData, device: torch.device, count: int) -> list[Batch]:
    """The first ``count`` validation images, one per batch."""
    out: list[Batch] = []
    for batch in data.val_loader(min(count, 16), device):
        for i in range(len(batch)):
            masks = None if batch.masks is None else batch.masks[i : i + 1]
            out.append(Batch(batch.images[i : i + 1], masks, batch.tags[i : i + 1], batch.index[i : i + 1]))
        if len(out) >= count:
            break
    return out[:count]


def choose_examples(model: Callable[[Tensor], Tensor], candidates: list[Batch], count: int) -> list[tuple[Batch, int]]:
    """The ``count`` images with the most out-of-candidate pixels under ``model`` (in candidate order
    among ties), each with that pixel count: the images where OCR has something to correct."""
    scored = []
    for order, ex in enumerate(candidates):
        logits = model(ex.images).float().cpu()
        scored.append((-int(oc_pixels(logits, ex.tags.cpu()).sum()), order, ex))
    chosen = sorted(scored, key=lambda t: (t[0], t[1]))[:count]
    return [(ex, -neg) for neg, _, ex in sorted(chosen, key=lambda t: t[1])]


def _legend(fig: Any, names: list[str], shown: set[int], k: int) -> None:
    """A legend of the classes that appear in the label panels, in the panels' colours."""
    from matplotlib.patches import Patch

    cmap = matplotlib_cmap("tab20")
    handles = [Patch(color=cmap(c / max(k - 1, 1)), label=names[c]) for c in sorted(shown) if c < len(names)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=7, frameon=False)


def matplotlib_cmap(name: str) -> Any:
    """A matplotlib colour map by name."""
    import matplotlib

    return matplotlib.colormaps[name]


LOSS_UNIT = "OCR loss per pixel (logit units)"  # a hinge on logit differences with margin δ


def example_columns(cfg: OCRConfig) -> tuple[str, ...]:
    """The panels of a row: with the OCR loss off (a baseline) no loss maps, which would be computed with
    a δ and τ that the trial never used."""
    columns = ("image", "ground truth", "prediction", "OC pixels")
    if cfg.selection == OCR_OFF:
        return columns
    return (*columns, "OCR loss, all pixels", "OCR loss, OC pixels only")


def row_label(index: int, tags: list[str], epoch: int | None) -> str:
    """A row's label: the validation image's index, its image-level tags, and the epoch drawn."""
    lines = [f"val image #{index}", "tags: " + (", ".join(tags) or "none")]
    if epoch is not None:
        lines.append(f"epoch {epoch}")
    return "\n".join(lines)


@torch.no_grad()
def write_examples(model: torch.nn.Module, data: TrialData, term: OCRTerm, cfg: OCRConfig, folder: Path,
                   device: torch.device, count: int = 6, scan: int = 24,
                   feed: Callable[[Tensor], Tensor] | None = None, epoch: int | None = None) -> Path:
    """A grid of validation examples: image, truth, prediction, OC pixels and, with the OCR loss on, its
    per-pixel map (all pixels / only OC pixels, under the trial's δ and τ).

    The examples are the ``count`` images with the most OC pixels among the first ``scan`` validation
    images (their indices and OC counts go to ``val_examples.json``); each row says its image's index, its
    tags and the epoch; the label panels share a class legend and each loss map has a labelled colour bar.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    net: Callable[[Tensor], Tensor] = model if feed is None else (lambda x: model(feed(x)))
    chosen = choose_examples(net, _images(data, device, scan), count)
    n, k = len(chosen), len(data.class_names) + 1
    names = ["background", *data.class_names]
    columns = example_columns(cfg)
    fig, axes = plt.subplots(n, len(columns), figsize=(2.5 * len(columns) + 0.6, 2.3 * n + 1.0), squeeze=False)
    shown: set[int] = set()
    for i, (ex, _) in enumerate(chosen):
        shown |= _draw_row(axes[i], net, ex, data, term, cfg, k)
        tags = [data.class_names[c] for c in ex.tags[0].nonzero().flatten().tolist() if c < len(data.class_names)]
        axes[i][0].set_ylabel(row_label(int(ex.index[0]), tags, epoch), fontsize=7)
    for j, title in enumerate(columns):
        axes[0][j].set_title(title, fontsize=8)
    at = f" at epoch {epoch}" if epoch is not None else ""
    loss = (f"OCR loss under δ = {cfg.delta:.3g}, τ = {cfg.tau:.3g} (selection {cfg.selection})"
            if cfg.selection != OCR_OFF else "OCR loss off (ocr.selection = none): no loss maps")
    fig.suptitle(f"Validation images with the most out-of-candidate pixels{at} (of the first {scan}); {loss}",
                 fontsize=8)
    _legend(fig, names, shown, k)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    path = folder / "val_examples.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    doc = [{"index": int(ex.index[0]), "oc_pixels": oc, "epoch": epoch} for ex, oc in chosen]
    (folder / "val_examples.json").write_text(json.dumps(doc, indent=1))
    return path


def loss_maps(model: Callable[[Tensor], Tensor], ex: Batch, term: OCRTerm,
              cfg: OCRConfig) -> tuple[Tensor, Tensor, Tensor]:
    """The per-pixel OCR loss, the OC pixels and the logits ``(1, C+1, H, W)`` of one example image, at the
    image's size ``(H, W)``. Raises ``ValueError`` if the network's logits are not at that size."""
    logits = model(ex.images).float().cpu()  # (1, C+1, H, W)
    if tuple(logits.shape[2:]) != tuple(ex.images.shape[2:]):
        raise ValueError(f"logits {tuple(logits.shape[2:])} are not at the image's size "
                         f"{tuple(ex.images.shape[2:])}: the loss map would not match the image")
    tags = ex.tags.cpu()
    loss = ocr_pixel_loss(logits, tags, term.matrix.cpu(), delta=cfg.delta, tau=cfg.tau, group=cfg.group,
                          ic_masking=cfg.ic_masking)[0]  # (H, W)
    return loss, oc_pixels(logits, tags)[0], logits


def _draw_row(axes: Any, model: Callable[[Tensor], Tensor], ex: Batch, data: TrialData, term: OCRTerm,
              cfg: OCRConfig, k: int) -> set[int]:
    """One example's panels; returns the classes its label panels show."""
    loss, oc, logits = loss_maps(model, ex, term, cfg)
    truth = ex.masks[0].cpu() if ex.masks is not None else torch.full(loss.shape, 255)
    prediction = logits[0].argmax(0)
    top = float(loss.max()) or 1.0
    labels = (_labels(truth), prediction.numpy().astype(np.float64))
    axes[0].imshow(data.picture(ex.images[0]), cmap="gray")
    for ax, panel in zip(axes[1:3], labels, strict=True):
        ax.imshow(panel, cmap="tab20", vmin=0, vmax=k - 1, interpolation="nearest")
    axes[3].imshow(oc.float().numpy(), cmap="Reds", vmin=0, vmax=1, interpolation="nearest")
    axes[3].set_xlabel(f"{int(oc.sum())} OC pixels", fontsize=6)
    for ax, loss_map in zip(axes[4:], (loss, loss * oc), strict=False):  # none with the OCR loss off
        image = ax.imshow(loss_map.numpy(), cmap="magma", vmin=0, vmax=top, interpolation="nearest")
        bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
        bar.ax.tick_params(labelsize=6)
        bar.set_label(LOSS_UNIT, fontsize=6)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    shown = set(prediction.unique().tolist())
    shown |= {int(c) for c in truth.unique().tolist() if int(c) != 255}
    return shown


def _labels(mask: Tensor) -> np.ndarray:
    out = mask.long().numpy().astype(np.float64)
    out[out == 255] = np.nan
    return out
