"""The training transform of natural images, as IRN, SEAM, MCTformer and DeepLab use them.

Random rescale by a factor in ``scale_min..scale_max`` (bilinear image, nearest mask), random horizontal
flip, random crop to ``crop_size`` (an image smaller than the crop is padded, the image with the ImageNet
mean, the mask with 255 so that padding is never trained on nor counted); ImageNet mean/std normalisation
follows (:func:`pipelines.data._transforms.normalize`). Image and mask go through every geometric step
together (torchvision's ``v2`` transforms on an ``Image`` and a ``Mask``), so they stay aligned. Evaluation
only normalises.

Its own module because torchvision's import costs about 1.7 s (``torchvision.ops`` loads ``torch._dynamo``)
in every trial process; only the disk data sets import it.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from pipelines.data._transforms import IMAGENET_MEAN
from pipelines.data._types import IGNORE

MEAN_UINT8 = tuple(round(255 * m) for m in IMAGENET_MEAN)  # the padding colour before normalisation


class RandomRescale(v2.Transform):
    """Resize by one random factor in ``[low, high]`` of the input's own size (aspect ratio kept)."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        self.low, self.high = low, high

    def make_params(self, flat_inputs: list[object]) -> dict[str, object]:
        """Draw the factor and the output size (from the first image's size)."""
        height, width = v2.query_size(flat_inputs)
        factor = self.low + (self.high - self.low) * float(torch.rand(()))
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt: object, params: dict[str, object]) -> object:
        """Resize one input; a ``Mask`` is resized with nearest neighbours, never blended."""
        return TF.resize(inpt, params["size"], antialias=True)


def train_transform(crop_size: int, scale_min: float, scale_max: float, flip: bool) -> v2.Compose:
    """The joint training transform of an ``(Image uint8 (3, H, W), Mask uint8 (H, W))`` pair."""
    steps: list[v2.Transform] = []
    if (scale_min, scale_max) != (1.0, 1.0):
        steps.append(RandomRescale(scale_min, scale_max))
    if flip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    fill = {tv_tensors.Image: MEAN_UINT8, tv_tensors.Mask: IGNORE}
    steps.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill))
    return v2.Compose(steps)


def apply_train(transform: v2.Compose, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Run ``transform`` on uint8 ``image (3, H, W)`` and ``mask (H, W)``; returns plain tensors and the
    padding ``(H', W')`` bool (True where the crop padded, False on image pixels).

    Padding is 255 in the mask, as uncertain pixels of a pseudo-mask are; a third, all-zero mask goes
    through the same steps, and its 255 fill marks the padding alone (the OCR loss needs to tell them apart).
    """
    blank = tv_tensors.Mask(torch.zeros(mask.shape, dtype=torch.uint8))
    out_image, out_mask, out_blank = transform(tv_tensors.Image(image), tv_tensors.Mask(mask), blank)
    return out_image.as_subclass(Tensor), out_mask.as_subclass(Tensor), out_blank.as_subclass(Tensor) == IGNORE
