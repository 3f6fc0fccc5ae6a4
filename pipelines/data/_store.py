"""A :class:`SegData` on disk: its tensors and names through :mod:`pipelines.cache`'s atomic writer."""

from __future__ import annotations

from pathlib import Path

from pipelines.cache import load_tensors, save_tensors
from pipelines.data._types import SegData, Split

_FIELDS = ("images", "masks", "tags")


def save_segdata(path: Path, data: SegData) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file, then a rename)."""
    tensors = {f"{s}.{f}": getattr(split, f).contiguous() for s, split in data.splits.items() for f in _FIELDS}
    save_tensors(path, tensors, {"name": data.name, "class_names": list(data.class_names)})


def load_segdata(path: Path) -> SegData:
    """Read what :func:`save_segdata` wrote."""
    tensors, meta = load_tensors(path)
    names = sorted({key.split(".", 1)[0] for key in tensors})
    splits = {s: Split(**{f: tensors[f"{s}.{f}"] for f in _FIELDS}) for s in names}
    return SegData(name=meta["name"], class_names=tuple(meta["class_names"]), **splits)
