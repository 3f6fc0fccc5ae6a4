"""ImageNet weights for a backbone, read from a local file (nothing downloads).

A file is a state dict in safetensors or torch format (read with ``weights_only=True``). The layout is
the one timm and torchvision share for ResNets (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``,
…); a classifier (``fc.*``), a ``module.`` prefix (DDP) and a ``{"state_dict": …}`` or ``{"model": …}``
wrapper are accepted. Keys or shapes that do not fit are an error naming the file and the first of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

IGNORED_PREFIXES = ("fc.",)  # the ImageNet classifier
SHOWN = 5  # keys listed in an error message


class WeightsError(ValueError):
    """A weights file is missing, unreadable, or does not fit the network."""


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a safetensors or torch file, unwrapped and with ``module.`` prefixes stripped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; model.weights must name a local state dict "
                           "(README: 'ImageNet weights')")
    try:
        blob = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(
            path, map_location="cpu", weights_only=True)
    except Exception as err:  # any reader failure means a bad file for the user
        raise WeightsError(f"weights file {path} could not be read as safetensors or a torch state dict "
                           f"({type(err).__name__}: {err})") from err
    return _flatten(blob, path)


def _flatten(blob: object, path: Path) -> dict[str, Tensor]:
    for wrapper in ("state_dict", "model"):
        if isinstance(blob, Mapping) and isinstance(blob.get(wrapper), Mapping):
            blob = blob[wrapper]
    if not isinstance(blob, Mapping) or not all(isinstance(v, Tensor) for v in blob.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict (a mapping of names to tensors)")
    return {str(k).removeprefix("module."): v for k, v in blob.items()}


def _mismatches(own: dict[str, Tensor], given: dict[str, Tensor]) -> tuple[list[str], list[str], list[str]]:
    missing = [k for k in own if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in own]
    shapes = [f"{k}: file {tuple(given[k].shape)} vs network {tuple(v.shape)}"
              for k, v in own.items() if k in given and given[k].shape != v.shape]
    return missing, unexpected, shapes


def _describe(path: Path, missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    parts = [f"{name} ({len(keys)}): {keys[:SHOWN]}" for name, keys in
             (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if keys]
    return (f"weights file {path} does not fit the backbone: " + "; ".join(parts) +
            ". Expected a timm/torchvision ResNet state dict of the same depth (conv1.weight, bn1.*, "
            "layer1.0.conv1.weight, …; fc.* is ignored): check model.backbone and the file")


def _adapt_stem(own: dict[str, Tensor], given: dict[str, Tensor]) -> None:
    """A 3-channel ``conv1`` for a network on other inputs: timm's channel adaptation (sum or repeat)."""
    key = "conv1.weight"
    if key not in own or key not in given or own[key].shape == given[key].shape:
        return
    if own[key].shape[0] == given[key].shape[0] and own[key].shape[2:] == given[key].shape[2:]:
        from timm.models import adapt_input_conv  # timm loads lazily (see _backbone)

        given[key] = adapt_input_conv(own[key].shape[1], given[key].float()).to(given[key].dtype)


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load ``path`` into ``backbone`` strictly (classifier keys ignored), or raise :class:`WeightsError`.

    Args:
        backbone: a timm or torchvision-layout ResNet (before its batch norms are frozen).
        path: a ``.safetensors`` file or a torch state dict (``.pth``/``.pt``/``.bin``).
    """
    given = {k: v for k, v in read_state_dict(path).items() if not k.startswith(IGNORED_PREFIXES)}
    own = backbone.state_dict()
    _adapt_stem(own, given)
    missing, unexpected, shapes = _mismatches(own, given)
    if missing or unexpected or shapes:
        raise WeightsError(_describe(Path(path).expanduser(), missing, unexpected, shapes))
    backbone.load_state_dict(given, strict=False)  # only num_batches_tracked may be absent
