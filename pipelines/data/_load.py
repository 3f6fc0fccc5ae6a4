"""The digit scenes, built once per cache folder and read from there afterwards."""

from __future__ import annotations

import logging
from pathlib import Path

from pipelines.cache import cached, config_key
from pipelines.config import DataConfig
from pipelines.data._digits import DIGITS_VERSION, build_digits
from pipelines.data._store import load_segdata, save_segdata
from pipelines.data._types import SegData

log = logging.getLogger(__name__)


def cache_path(cfg: DataConfig, cache_dir: Path) -> Path:
    """Where :func:`load_data` keeps the digit scenes ``cfg.digits`` describes:
    ``cache_dir/data/digits-<key>.pt``, keyed by the generator settings only."""
    return cache_dir / "data" / f"{cfg.name}-{config_key('digits', DIGITS_VERSION, cfg.digits)}.pt"


def load_data(cfg: DataConfig, cache_dir: Path) -> SegData:
    """The digit scenes ``cfg.digits`` describes, from the cache under ``cache_dir`` or built once.

    Concurrent callers with the same config build it once: the others wait on a file lock and read it.
    Disk data sets are not loaded into memory: :func:`pipelines.data.open_data` streams them.

    Args:
        cfg: ``cfg.name`` must be ``digits``.
        cache_dir: the shared cache folder; entries go to ``cache_dir / "data"``.
    """
    if cfg.on_disk:
        raise ValueError(f"data.name = {cfg.name!r} is read from disk as a stream; use open_data")
    path = cache_path(cfg, Path(cache_dir))
    data = cached(path, lambda: build_digits(cfg.digits), save_segdata, load_segdata)
    log.info("data %s: %d train, %d val images, %d classes (%s)",
             data.name, len(data.train), len(data.val), data.num_classes, path)
    return data
