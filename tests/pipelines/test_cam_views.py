"""Stage 1's CAM inference over scales and mirror images (IRN's views), and its cache key."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipelines.config import ConfigError, from_flat
from pipelines.data import Batch
from pipelines.models import build_cam_model
from pipelines.stage1_key import cam_network
from pipelines.stage_cam import cam_views, pseudo_labels

C = 3


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = from_flat({"model.name": "deeplab", "model.cam_backbone": "resnet18", "seg.init": "scratch"})
    return build_cam_model(cfg, C, 3).eval()


def _batch(images: Tensor) -> Batch:
    return Batch(images, None, torch.ones(images.shape[0], C, dtype=torch.uint8), torch.arange(images.shape[0]))


def _cfg(**flat: object) -> object:
    return from_flat({"cam.bg_threshold": 0.3, "cam.ink_threshold": 0.0, **{k.replace("__", "."): v
                                                                             for k, v in flat.items()}})


def test_one_plain_view_is_the_single_scale_cam(model: nn.Module) -> None:
    images = torch.randn(2, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        single = F.interpolate(F.relu(model(images)[1].float()), size=(40, 56), mode="bilinear", align_corners=False)
    assert torch.allclose(cam_views(model, images, (1.0,), False), single)
    labels = pseudo_labels(model, _batch(images), _cfg(stage1__cam_scales="1.0"))  # type: ignore[arg-type]
    normalised = single / single.amax(dim=(2, 3), keepdim=True).clamp_min(1e-5)
    score, cls = normalised.max(dim=1)
    assert torch.equal(labels, torch.where(score >= 0.3, cls + 1, 0).to(torch.uint8))


def test_flip_makes_the_pseudo_mask_mirror_equivariant(model: nn.Module) -> None:
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    flipped = _cfg(stage1__cam_scales="1,1.5", stage1__cam_flip=True)
    a = pseudo_labels(model, _batch(images), flipped)  # type: ignore[arg-type]
    b = pseudo_labels(model, _batch(images.flip(-1)), flipped)  # type: ignore[arg-type]
    assert torch.equal(a, b.flip(-1))
    symmetric = torch.cat([images[..., :16], images[..., :16].flip(-1)], dim=-1)  # a mirror-symmetric input
    sym = pseudo_labels(model, _batch(symmetric), flipped)  # type: ignore[arg-type]
    assert torch.equal(sym, sym.flip(-1))
    plain = cam_views(model, symmetric, (1.0,), False)
    assert not torch.allclose(plain, plain.flip(-1))  # the network alone is not symmetric: flip did it


def test_several_scales_sum_their_views(model: nn.Module) -> None:
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    both = cam_views(model, images, (1.0, 0.5), False)
    assert torch.allclose(both, cam_views(model, images, (1.0,), False) + cam_views(model, images, (0.5,), False))


def test_cam_views_enter_the_stage1_key_only_when_not_the_default() -> None:
    default = cam_network(from_flat({}))  # type: ignore[arg-type]
    assert "cam_scales" not in default and "lr_schedule" not in default
    irn = cam_network(from_flat({"stage1.cam_scales": "1,0.5,1.5,2", "stage1.cam_flip": True}))
    assert (irn["cam_scales"], irn["cam_flip"]) == ((1.0, 0.5, 1.5, 2.0), True)


def test_bad_cam_scales_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"stage1.cam_scales = '1;2' must list scales in \[0.1, 4\]"):
        from_flat({"stage1.cam_scales": "1;2"})
