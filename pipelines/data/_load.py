"""One entry point for every data set, cached on disk so each is built or decoded once per cache folder."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from pipelines.cache import cached, config_key
from pipelines.config import DataConfig
from pipelines.data._coco import build_coco
from pipelines.data._digits import DIGITS_VERSION, build_digits
from pipelines.data._store import load_segdata, save_segdata
from pipelines.data._types import SegData
from pipelines.data._voc import build_voc

log = logging.getLogger(__name__)

DISK_VERSION = 1  # bump whenever decoding VOC/COCO changes: it is part of their cache keys


def cache_path(cfg: DataConfig, cache_dir: Path) -> Path:
    """Where :func:`load_data` keeps the data set ``cfg`` describes: ``cache_dir/data/<name>-<key>.pt``.

    Digit scenes are keyed by their generator settings (``cfg.digits``; ``cfg.image_size`` and the other
    disk fields do not apply to them). VOC and COCO are keyed by the resolved root and the reading
    settings, not by the files' contents: delete the entry after changing the files on disk.
    """
    if cfg.name == "digits":
        key = config_key("digits", DIGITS_VERSION, cfg.digits)
    else:
        key = config_key(cfg.name, DISK_VERSION, str(Path(cfg.root).expanduser().resolve()), cfg.image_size,
                         cfg.train_split, cfg.val_split, cfg.max_images)
    return cache_dir / "data" / f"{cfg.name}-{key}.pt"


def _builder(cfg: DataConfig) -> Callable[[], SegData]:
    if cfg.name == "digits":
        return lambda: build_digits(cfg.digits)
    if cfg.name == "voc":
        return lambda: build_voc(cfg)
    if cfg.name == "coco":
        return lambda: build_coco(cfg)
    raise ValueError(f"data.name = {cfg.name!r} is not allowed; choose one of ['digits', 'voc', 'coco']")


def load_data(cfg: DataConfig, cache_dir: Path) -> SegData:
    """The data set ``cfg`` describes, from the cache under ``cache_dir`` or built (and cached) once.

    Concurrent callers with the same config build it once: the others wait on a file lock and read it.

    Args:
        cfg: which data set (``cfg.name``: digits, voc or coco) and how to build or read it.
        cache_dir: the shared cache folder; entries go to ``cache_dir / "data"``.

    Raises:
        DataError: for VOC/COCO, when ``cfg.root`` is missing or malformed (the message says how to fix it).
    """
    path = cache_path(cfg, Path(cache_dir))
    data = cached(path, _builder(cfg), save_segdata, load_segdata)
    log.info("data %s: %d train, %d val images, %d classes (%s)",
             data.name, len(data.train), len(data.val), data.num_classes, path)
    return data
