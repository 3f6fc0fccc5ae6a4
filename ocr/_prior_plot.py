"""Heat maps of a prior correlation matrix, raw and row min-max normalised (like the paper's Fig. S2).

matplotlib is imported lazily, so the loss itself never pays for it; torch is not imported at all (a
tensor is drawn as one, an array or a list as itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # drawn from a CSV too (by a study's driver): torch is not needed for that
    from torch import Tensor


def _row_minmax_np(m: np.ndarray) -> np.ndarray:
    lo = m.min(axis=1, keepdims=True)
    span = m.max(axis=1, keepdims=True) - lo
    out = np.zeros_like(m, dtype=np.float64)
    np.divide(m - lo, span, out=out, where=span > 0)
    return out


def draw_prior_heatmaps(matrix: Tensor | np.ndarray, class_names: Sequence[str], path: str | Path,
                        title: str = "prior", metadata: dict[str, str] | None = None) -> Path:
    """Save a PNG with two heat maps of ``matrix`` ``(C+1, C+1)``: raw, and each row min-max normalised.

    Args:
        matrix: the prior matrix over global channel ids (0 = background).
        class_names: the C foreground names; "background" is prepended.
        path: where to write the PNG.
        title: a prefix for both panel titles.
        metadata: text chunks for the PNG (matplotlib's ``savefig(metadata=...)``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = matrix.detach().cpu().double().numpy() if hasattr(matrix, "detach") else np.asarray(matrix, float)
    names = ["background", *class_names]
    if m.shape != (len(names), len(names)):
        raise ValueError(f"matrix must be ({len(names)}, {len(names)}) for {len(class_names)} classes; "
                         f"got {m.shape}")
    size = max(6.0, 0.35 * len(names))
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 2, size))
    for ax, data, label in ((axes[0], m, "raw"), (axes[1], _row_minmax_np(m), "row min-max")):
        _panel(fig, ax, data, names, f"{title} ({label})")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, metadata=metadata)
    plt.close(fig)
    return out


def _panel(fig: Any, ax: Any, data: np.ndarray, names: list[str], title: str) -> None:
    im = ax.imshow(data, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
