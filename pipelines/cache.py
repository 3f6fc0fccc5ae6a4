"""A disk cache for expensive, shared results (data sets, stage-1 pseudo-masks).

Entries are keyed by a hash of everything they depend on. Two processes asking for the same key at
once compute it once: the first takes a file lock and builds, the other waits on the lock and reads.
Entries are written to a temporary file and renamed into place, so a crash never leaves a half-written
entry behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from filelock import FileLock

log = logging.getLogger(__name__)
T = TypeVar("T")


def config_key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (dataclasses as dicts)."""
    blob = json.dumps(parts, sort_keys=True, default=_jsonable)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _jsonable(obj: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot hash {type(obj).__name__} into a cache key")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write tensors and JSON metadata atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"tensors": tensors, "meta": json.dumps(meta)}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read what :func:`save_tensors` wrote (``weights_only=True``: plain tensors and strings only)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return blob["tensors"], json.loads(blob["meta"])


def cached(path: Path, build: Callable[[], T], save: Callable[[Path, T], None],
           load: Callable[[Path], T]) -> T:
    """Return the entry at ``path``, building and saving it under a file lock if it is missing."""
    if path.exists():
        return load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():  # another process built it while we waited
            log.info("cache hit after waiting: %s", path)
            return load(path)
        log.info("cache miss, building: %s", path)
        value = build()
        save(path, value)
        return value


def cached_folder(folder: Path, fill: Callable[[Path], None], load: Callable[[Path], T]) -> T:
    """Return ``load(folder)``, first filling the folder under a file lock if it is missing.

    ``fill`` writes into a temporary sibling folder, which is then renamed into place: a folder that
    exists is always complete, and a crash leaves only a temporary folder behind.
    """
    if folder.is_dir():
        return load(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not folder.is_dir():
            log.info("cache miss, building: %s", folder)
            tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                fill(tmp)
                os.replace(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return load(folder)
