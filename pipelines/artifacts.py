"""Files a trial leaves next to its checkpoint for people to look at (MLflow uploads them).

Every evaluated epoch (cheap: numbers only), so that a trial ASHA stops has them at the epoch it stopped:

- ``class_iou.json``: validation IoU per class.
- ``prior.csv``: the prior matrix in force (its corner cell names the variant).
- ``val_examples.npz`` and ``val_examples.json``: the validation images with the most out-of-candidate
  pixels, with ground truth, prediction, OC pixels and, when the trial's OCR loss is on, its per-pixel map
  (like the paper's Fig. S1; a baseline has no loss maps: its δ and τ do nothing); the JSON names them.

Drawn from those once, at the trial's last report, or by whoever uploads a stopped trial's artifacts
(:func:`pipelines.figures.draw_pending`): ``prior.png`` (raw and row-normalised heat maps) and
``val_examples.png`` (a class legend, colour bars labelled with the loss's unit, and per row the image's
index, its tags and the epoch). Every panel of a row is the whole image at its own resolution and aspect
ratio (nothing padded or cropped). With DeepLab-v2's ASPP (dilations 6 to 24 at output stride 8: taps 48
to 192 px away) the logits change where the dilated taps leave the image, so a loss map can show bands
parallel to the edges at those distances (full-width ones on a portrait image, whose narrow side every
large tap overshoots) that the argmax does not: the network's output, not an artefact of the drawing.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from ocr import oc_pixels, ocr_pixel_loss
from pipelines.config import OCRConfig
from pipelines.data import Batch, TrialData
from pipelines.figures import EXAMPLES_DATA, IGNORE, example_columns, loss_title
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


def write_prior(term: OCRTerm, class_names: tuple[str, ...], folder: Path) -> Path:
    """The prior matrix in force as CSV, rows and columns named, the corner cell naming the variant."""
    names = ["background", *class_names]
    m = term.matrix.detach().cpu().double().numpy()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([term.cfg.prior, *names])
    writer.writerows([n, *(f"{x:.6g}" for x in row)] for n, row in zip(names, m, strict=True))
    path = folder / PRIOR_FILE
    path.write_text(out.getvalue())
    return path


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


@torch.no_grad()
def write_examples(model: torch.nn.Module, data: TrialData, term: OCRTerm, cfg: OCRConfig, folder: Path,
                   device: torch.device, count: int = 6, scan: int = 24,
                   feed: Callable[[Tensor], Tensor] | None = None, epoch: int | None = None) -> Path:
    """The numbers of the validation examples' grid (``val_examples.npz``, drawn by
    :func:`pipelines.figures.draw_examples`): image, truth, prediction, OC pixels and, with the OCR loss
    on, its per-pixel map under the trial's δ and τ.

    The examples are the ``count`` images with the most OC pixels among the first ``scan`` validation
    images (their indices and OC counts also go to ``val_examples.json``). Returns the ``.npz`` path.
    """
    model.eval()
    net: Callable[[Tensor], Tensor] = model if feed is None else (lambda x: model(feed(x)))
    chosen = choose_examples(net, _images(data, device, scan), count)
    arrays: dict[str, np.ndarray] = {}
    rows = []
    for i, (ex, oc_count) in enumerate(chosen):
        arrays.update(example_arrays(net, ex, data, term, cfg, i))
        tags = [data.class_names[c] for c in ex.tags[0].nonzero().flatten().tolist() if c < len(data.class_names)]
        rows.append({"index": int(ex.index[0]), "tags": tags, "oc_pixels": oc_count})
    meta = {"class_names": list(data.class_names), "columns": list(example_columns(cfg.selection)),
            "epoch": epoch, "scan": scan, "loss": loss_title(cfg.selection, cfg.delta, cfg.tau), "rows": rows}
    path = folder / EXAMPLES_DATA
    tmp = folder / f".{EXAMPLES_DATA}.tmp.npz"
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp, allow_pickle=False, **cast(dict[str, Any], arrays))
    tmp.replace(path)
    doc = [{"index": r["index"], "oc_pixels": r["oc_pixels"], "epoch": epoch} for r in rows]
    (folder / "val_examples.json").write_text(json.dumps(doc, indent=1))
    return path


def example_arrays(model: Callable[[Tensor], Tensor], ex: Batch, data: TrialData, term: OCRTerm, cfg: OCRConfig,
                   i: int) -> dict[str, np.ndarray]:
    """Row ``i`` of ``val_examples.npz`` (see :mod:`pipelines.figures`): the picture, truth, prediction, OC
    pixels and, with the OCR loss on, its per-pixel map, each at the image's own size."""
    loss, oc, logits = loss_maps(model, ex, term, cfg)
    truth = ex.masks[0].cpu() if ex.masks is not None else torch.full(loss.shape, IGNORE)
    picture = np.asarray(data.picture(ex.images[0]), dtype=np.float64)
    arrays: dict[str, np.ndarray] = {f"picture_{i}": np.clip(np.rint(picture * 255), 0, 255).astype(np.uint8),
              f"truth_{i}": truth.numpy().astype(np.int16),
              f"prediction_{i}": logits[0].argmax(0).numpy().astype(np.int16),
              f"oc_{i}": oc.numpy().astype(bool)}
    if cfg.selection != OCR_OFF:  # a baseline's δ and τ do nothing: no loss map of them
        arrays[f"loss_{i}"] = loss.numpy().astype(np.float32)
    return arrays


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
