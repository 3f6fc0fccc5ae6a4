"""Cheap checks of what a trial will read from disk, for the driver to run before anything starts.

A study runs many trials on workers that may be other machines; a data set that is not where the spec
says would otherwise be found once per trial and attempt, after Ray has started and the study's folder
is written. :func:`check_inputs` looks only at folders and list files (no image is decoded).
"""

from __future__ import annotations

from pathlib import Path

from pipelines.config import TrialConfig

WEIGHTS_FIX = "put the weights file there, or set the key to another file (nothing downloads at run time)"


def check_inputs(cfg: TrialConfig) -> None:
    """Raise a ``DataError`` (a ``ValueError``; a ``FileNotFoundError`` when something is missing)
    naming the path when a trial of ``cfg`` could not read its data or weights.

    A data set already in the cache (``cfg.cache_dir``) is not looked for on disk: trials read the cache.
    """
    _check_data(cfg)
    _check_weights(cfg)


def _check_data(cfg: TrialConfig) -> None:
    data = cfg.data
    if data.name == "digits":  # generated, nothing to find (and no torch import for it)
        return
    from pipelines.data import cache_path

    if cache_path(data, cfg.cache_path).exists():
        return
    root = Path(data.root).expanduser()
    if data.name == "voc":
        _check_voc(root, (data.train_split, data.val_split))
    elif data.name == "coco":
        _check_coco(root, (("train_split", data.train_split), ("val_split", data.val_split)))


def _check_voc(root: Path, splits: tuple[str, ...]) -> None:
    from pipelines.data._disk import read_list, require
    from pipelines.data._voc import AUG_SPLIT, _list_fix, voc_root

    folder = voc_root(root)
    for split in splits:
        fix = _list_fix(folder, split)
        read_list(folder / "ImageSets" / "Segmentation" / f"{split}.txt", fix)
        folders = ["SegmentationClassAug"] if split == AUG_SPLIT else ["SegmentationClass", "SegmentationClassAug"]
        if not any((folder / name).is_dir() for name in folders):
            require(folder / folders[0], f"the masks of split {split!r} are missing", fix)


def _check_coco(root: Path, splits: tuple[tuple[str, str], ...]) -> None:
    from pipelines.data._coco import _LAYOUT, SPLIT_FOLDERS
    from pipelines.data._disk import require
    from pipelines.data._types import DataError

    require(root, "the data set folder does not exist", _LAYOUT)
    for field, split in splits:
        if split not in SPLIT_FOLDERS:
            raise DataError(f"data.{field} = {split!r} is not a COCO 2014 split; "
                            f"choose one of {list(SPLIT_FOLDERS)}")
        folder = SPLIT_FOLDERS[split]
        require(root / "SegmentationClass" / folder, f"the {folder} masks are missing", _LAYOUT)
        require(root / folder, f"the {folder} images are missing", _LAYOUT)


def _check_weights(cfg: TrialConfig) -> None:
    """A ``model.weights`` file, for configs that have one (local ImageNet weights for a backbone)."""
    weights = getattr(getattr(cfg, "model", None), "weights", "")
    if isinstance(weights, str) and weights:
        from pipelines.data._disk import require

        require(Path(weights).expanduser(), "model.weights names a file that does not exist", WEIGHTS_FIX)
