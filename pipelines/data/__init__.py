"""Segmentation data sets for the trials: offline digit scenes, PASCAL VOC 2012, COCO 2014, a folder layout.

:func:`open_data` turns a trial config into a :class:`TrialData` that hands out :class:`Batch` es: digit
scenes from memory, disk data sets streamed through ``DataLoader`` workers with the field's augmentation
(:mod:`pipelines.data._augment`, imported when a disk data set first trains: torchvision is slow to import).
:func:`check_data` checks a trial's data up front.
"""

from pipelines.data._check import check_data, check_mask_folder
from pipelines.data._coco import COCO_CLASSES
from pipelines.data._dataset import SegDataset, read_image
from pipelines.data._digits import build_digits
from pipelines.data._load import cache_path, load_data
from pipelines.data._open import class_names_of, open_data, split_files
from pipelines.data._png import folder_fingerprint, write_index_png
from pipelines.data._transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from pipelines.data._trial_data import Batch, DiskData, Loader, MemoryData, Targets, TrialData
from pipelines.data._types import (
    IGNORE,
    DataError,
    DataNotFoundError,
    SegData,
    Split,
    SplitFiles,
    tags_from_masks,
)
from pipelines.data._voc import VOC_CLASSES

__all__ = [
    "COCO_CLASSES",
    "IGNORE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VOC_CLASSES",
    "Batch",
    "DataError",
    "DataNotFoundError",
    "DiskData",
    "Loader",
    "MemoryData",
    "SegData",
    "SegDataset",
    "Split",
    "SplitFiles",
    "Targets",
    "TrialData",
    "build_digits",
    "cache_path",
    "check_data",
    "check_mask_folder",
    "class_names_of",
    "folder_fingerprint",
    "load_data",
    "normalize",
    "open_data",
    "read_image",
    "split_files",
    "tags_from_masks",
    "write_index_png",
]
