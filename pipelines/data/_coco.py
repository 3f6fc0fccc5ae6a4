"""COCO 2014 in the layout weakly-supervised segmentation code commonly uses.

``root/train2014/*.jpg``, ``root/val2014/*.jpg``, and index-PNG masks
``root/SegmentationClass/{train2014,val2014}/<stem>.png`` holding 0 (background), 1..80 (the 80 classes
in COCO's order, i.e. category ids made contiguous) and 255 (ignore). A split is every mask of its folder,
in file-name order.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.data._disk import check_all_exist, require
from pipelines.data._types import DataError, SplitFiles

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag",
    "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat",
    "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog",
    "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet", "tv",
    "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
SPLIT_FOLDERS = {"train": "train2014", "train2014": "train2014", "val": "val2014", "val2014": "val2014"}
_LAYOUT = "data.root must hold train2014/, val2014/ and SegmentationClass/{train2014,val2014}/ (index PNGs)"


def coco_files(root: Path, split: str, max_images: int, field: str = "split",
               need_masks: bool = True) -> SplitFiles:
    """The files of a split (``train``/``val`` or ``train2014``/``val2014``) in name order, the first
    ``max_images`` (all when 0): every mask of the split's mask folder, or, with ``need_masks=False``
    and no mask folder, every image of the split. ``field`` names the config key in error messages."""
    if split not in SPLIT_FOLDERS:
        raise DataError(f"data.{field} = {split!r} is not a COCO 2014 split; "
                        f"choose one of {list(SPLIT_FOLDERS)}")
    folder = SPLIT_FOLDERS[split]
    require(root, "the data set folder does not exist", _LAYOUT)
    mask_dir = root / "SegmentationClass" / folder
    if not need_masks and not mask_dir.is_dir():
        images = sorted(require(root / folder, f"the {folder} images are missing", _LAYOUT).glob("*.jpg"))
        images = images[:max_images] if max_images > 0 else images
        return SplitFiles(tuple(p.stem for p in images), tuple(images), None)
    require(mask_dir, f"the {folder} masks are missing", _LAYOUT)
    masks = sorted(mask_dir.glob("*.png"))
    if not masks:
        raise DataError(f"{mask_dir} holds no .png masks; {_LAYOUT}")
    masks = masks[:max_images] if max_images > 0 else masks
    images = [root / folder / f"{mask.stem}.jpg" for mask in masks]
    check_all_exist(images, f"images of the masks in {mask_dir}",
                    f"put the COCO {folder} images in {root / folder}")
    return SplitFiles(tuple(m.stem for m in masks), tuple(images), tuple(masks))
