"""Segmentation data sets for the trials: offline digit scenes, PASCAL VOC 2012 and COCO 2014.

Every data set arrives as a :class:`SegData` of uint8 tensors through :func:`load_data`, which caches it.
"""

from pipelines.data._coco import COCO_CLASSES
from pipelines.data._digits import build_digits
from pipelines.data._load import cache_path, load_data
from pipelines.data._types import DataError, DataNotFoundError, SegData, Split, tags_from_masks
from pipelines.data._voc import VOC_CLASSES

__all__ = [
    "COCO_CLASSES",
    "VOC_CLASSES",
    "DataError",
    "DataNotFoundError",
    "SegData",
    "Split",
    "build_digits",
    "cache_path",
    "load_data",
    "tags_from_masks",
]
