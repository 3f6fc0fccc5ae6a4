"""Dense-CRF post-processing of predictions (Krähenbühl & Koltun), as DeepLab and WSSS papers report it.

Needs the optional ``pydensecrf2`` package (``pip install 'ocr-study[crf]'``; it compiles with Cython and
a C++ compiler). The settings are DeepLab-v2's for PASCAL VOC: 10 mean-field iterations, a Gaussian
kernel (weight 3, spatial σ 1) and a bilateral kernel (weight 4, spatial σ 67, colour σ 3).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

ITERATIONS = 10
GAUSSIAN = {"sxy": 1, "compat": 3}
BILATERAL = {"sxy": 67, "srgb": 3, "compat": 4}


def crf_available() -> bool:
    """Whether ``pydensecrf2`` imports here."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def _one(image: np.ndarray, probs: np.ndarray) -> np.ndarray:
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    k, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))  # (K, H*W) −log p
    crf.addPairwiseGaussian(**GAUSSIAN)
    crf.addPairwiseBilateral(rgbim=np.ascontiguousarray(image), **BILATERAL)
    return np.asarray(crf.inference(ITERATIONS), dtype=np.float32).reshape(k, h, w)


def crf_scores(images: Tensor, probs: Tensor) -> Tensor:
    """Refined log-probabilities ``(B, K, H, W)`` from RGB ``images (B, H, W, 3)`` uint8 and class
    probabilities ``probs (B, K, H, W)``.

    Raises:
        RuntimeError: ``pydensecrf2`` is not installed (``eval.crf`` then cannot be used).
    """
    if not crf_available():
        raise RuntimeError("eval.crf = true needs the optional package pydensecrf2 (pip install "
                           "pydensecrf2; it compiles with Cython and a C++ compiler), or set eval.crf=false")
    image_np = images.cpu().numpy().astype(np.uint8)
    probs_np = probs.float().cpu().numpy()
    out = [_one(image_np[i], probs_np[i]) for i in range(len(probs_np))]
    return torch.from_numpy(np.stack(out)).clamp_min(1e-12).log()
