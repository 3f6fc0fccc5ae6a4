"""Prior matrices on a small hand-made tag matrix, and the posterior EMA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ocr import PRIOR_VARIANTS, PosteriorPrior, draw_prior_heatmaps, prior_matrix, shuffle_permutation

# 5 images, 3 classes: class 0 with 1 twice, class 2 alone twice, class 0 alone once.
TAGS = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 0]])
N = torch.tensor([[3.0, 2.0, 0.0], [2.0, 2.0, 0.0], [0.0, 0.0, 2.0]])


def _fg(m: torch.Tensor) -> torch.Tensor:
    return m[1:, 1:]


def test_background_row_and_column() -> None:
    for variant in ("cooc_raw", "cooc_minmax", "cooc_conditional", "shuffled"):
        m = prior_matrix(TAGS, variant)
        assert m.shape == (4, 4)
        assert float(m[0, 0]) == 1.0
        assert torch.equal(m[0, 1:], torch.zeros(3)) and torch.equal(m[1:, 0], torch.zeros(3))


def test_cooc_raw_counts() -> None:
    assert torch.equal(_fg(prior_matrix(TAGS, "cooc_raw")), N)


def test_cooc_minmax_rows() -> None:
    expected = torch.tensor([[1.0, 2 / 3, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(_fg(prior_matrix(TAGS, "cooc_minmax")), expected)


def test_cooc_conditional() -> None:
    expected = torch.tensor([[1.0, 2 / 3, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(_fg(prior_matrix(TAGS, "cooc_conditional")), expected)


def test_class_never_seen_gives_zero_row() -> None:
    tags = torch.cat([TAGS, torch.zeros(5, 1, dtype=TAGS.dtype)], dim=1)
    for variant in ("cooc_minmax", "cooc_conditional"):
        assert torch.equal(prior_matrix(tags, variant)[4], torch.zeros(5))


def test_uniform_identity_posterior_start() -> None:
    assert torch.equal(prior_matrix(TAGS, "uniform"), torch.ones(4, 4))
    assert torch.equal(prior_matrix(TAGS, "identity"), torch.eye(4))
    assert torch.equal(prior_matrix(TAGS, "posterior"), torch.eye(4))


def test_shuffled_is_a_fixed_simultaneous_permutation() -> None:
    base = _fg(prior_matrix(TAGS, "cooc_minmax"))
    perm = shuffle_permutation(3, seed=1)
    shuffled = _fg(prior_matrix(TAGS, "shuffled", seed=1))
    assert torch.equal(shuffled, base[perm][:, perm])
    assert torch.equal(shuffled, _fg(prior_matrix(TAGS, "shuffled", seed=1)))
    assert sorted(shuffled.flatten().tolist()) == sorted(base.flatten().tolist())


def test_unknown_variant_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="variant"):
        prior_matrix(TAGS, "cooc")
    assert "posterior" in PRIOR_VARIANTS


def test_posterior_ema_updates_rows_of_predicted_classes() -> None:
    post = PosteriorPrior(3, momentum=0.5)
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 10.0]]).T.reshape(1, 3, 1, 2)  # pixels: 0, 2
    p = torch.softmax(logits, dim=1)[0, :, 0]  # (3, 2)
    m = post.update(logits)
    assert torch.allclose(m[0], 0.5 * torch.eye(3)[0] + 0.5 * p[:, 0])
    assert torch.allclose(m[2], 0.5 * torch.eye(3)[2] + 0.5 * p[:, 1])
    assert torch.equal(m[1], torch.eye(3)[1])  # nobody predicted class 1
    state = post.state_dict()
    other = PosteriorPrior(3)
    other.load_state_dict(state)
    assert torch.equal(other.matrix, m)


def test_posterior_respects_valid_mask() -> None:
    post = PosteriorPrior(3, momentum=0.0)
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 10.0]]).T.reshape(1, 3, 1, 2)
    post.update(logits, valid=torch.tensor([[[True, False]]]))
    assert torch.equal(post.matrix[2], torch.eye(3)[2])


def test_heatmap_png(tmp_path: Path) -> None:
    out = draw_prior_heatmaps(prior_matrix(TAGS, "cooc_raw"), ["a", "b", "c"], tmp_path / "prior.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="matrix"):
        draw_prior_heatmaps(torch.ones(3, 3), ["a", "b", "c"], tmp_path / "bad.png")
