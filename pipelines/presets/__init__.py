"""Trial settings shipped with the package: ``paper.yaml`` is the OCR authors' training setting."""

from pipelines.presets._load import PRESETS, load_preset

__all__ = ["PRESETS", "load_preset"]
