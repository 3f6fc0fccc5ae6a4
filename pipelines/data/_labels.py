"""Image-level labels from a class-label file, for users who have tags but no training masks.

Two formats: ``cls_labels.npy`` as IRN and SEAM ship it (a pickled dict from image id to a length-C 0/1
vector; IRN's keys are the id's digits as an integer, ``2007000032`` for ``2007_000032``, SEAM's the id
string), or a CSV whose header is ``id`` then the C class names in index order, one 0/1 row per image.
"""

from __future__ import annotations

import csv
import pickle  # only through _ArraysOnly, which refuses every class but numpy's arrays
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.data._types import DataError, DataNotFoundError

_NUMPY_GLOBALS = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
                  for n in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype")}


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain containers, numbers, strings and numpy arrays, and refuses every other class (so a
    label file cannot run code, unlike ``np.load(allow_pickle=True)``)."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only numpy's array, dtype and scalar reconstructors."""
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refers to {module}.{name}, which a label table never needs")


def _read_npy(path: Path) -> Mapping[object, object]:
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            read_header(handle)
            table = _ArraysOnly(handle).load()
        table = table.item() if isinstance(table, np.ndarray) and table.shape == () else table
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise DataError(f"{path} is not a cls_labels.npy dict of id → label vector ({err})") from err
    if not isinstance(table, dict):
        raise DataError(f"{path} holds a {type(table).__name__}, not a dict of id → label vector")
    return table


def _read_csv(path: Path, class_names: Sequence[str]) -> Mapping[object, object]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or [c.strip() for c in rows[0][1:]] != list(class_names):
        raise DataError(f"{path}: the header must be 'id' then the {len(class_names)} class names in "
                        f"order ({', '.join(class_names[:3])}, ...)")
    return {row[0].strip(): [float(x) for x in row[1:]] for row in rows[1:] if row}


def _lookup(table: Mapping[object, object], image_id: str) -> object:
    if image_id in table:
        return table[image_id]
    digits = image_id.replace("_", "")
    return table.get(int(digits)) if digits.isdigit() else None


def read_labels(path: Path, ids: Sequence[str], class_names: Sequence[str]) -> torch.Tensor:
    """Tags ``(N, C)`` uint8 of ``ids`` from a class-label file (``.npy`` or ``.csv``).

    Raises:
        DataError: naming the file and the first ids it lacks, or a vector of the wrong length.
    """
    if not path.is_file():
        raise DataNotFoundError(f"{path} not found: data.labels names a class-label file (cls_labels.npy "
                                "or CSV); fix the path or set data.labels='' to take tags from the masks")
    table = _read_csv(path, class_names) if path.suffix.lower() == ".csv" else _read_npy(path)
    rows = [_lookup(table, i) for i in ids]
    missing = [i for i, row in zip(ids, rows, strict=True) if row is None]
    if missing:
        raise DataError(f"{path} has no labels for {len(missing)} of {len(ids)} images (first: "
                        f"{', '.join(missing[:5])}); use a label file that covers the training split")
    tags = np.asarray(rows, dtype=np.float32)
    if tags.ndim != 2 or tags.shape[1] != len(class_names):
        raise DataError(f"{path}: label vectors must have {len(class_names)} entries (one per class), "
                        f"got shape {tags.shape}")
    return torch.from_numpy(tags > 0.5).to(torch.uint8)
