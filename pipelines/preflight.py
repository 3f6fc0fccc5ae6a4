"""Cheap checks of what a trial will read from disk, for the driver to run before anything starts.

A study runs many trials on workers that may be other machines; a data set that is not where the spec
says would otherwise be found once per trial and attempt, after Ray has started and the study's folder
is written. :func:`check_inputs` reads list files, folders and file headers, and the values of a few
masks (:func:`pipelines.data.check_data`); no image is decoded. Weights files named by ``model.weights``
/ ``model.cam_weights`` are loaded into their backbones once (:func:`pipelines.models.check_weights`), so
a file with missing or misfit keys fails here, naming the file and the first bad keys.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.config import TrialConfig

WEIGHTS_FIX = "put the weights file there, or set the key to another file (nothing downloads at run time)"


def check_inputs(cfg: TrialConfig) -> None:
    """Raise a ``DataError`` (a ``ValueError``; a ``FileNotFoundError`` when something is missing)
    naming the path when a trial of ``cfg`` could not read its data or weights.
    """
    _check_data(cfg)
    _check_weights(cfg)
    _check_weights_fit(cfg)


def _check_data(cfg: TrialConfig) -> None:
    if not cfg.data.on_disk:  # digit scenes are generated: nothing to find (and no torch import for them)
        return
    from pipelines.data import check_data

    check_data(cfg)


def _check_weights(cfg: TrialConfig) -> None:
    """A ``model.weights`` file, for configs that have one (local ImageNet weights for a backbone)."""
    model = getattr(cfg, "model", None)
    for key in ("weights", "cam_weights"):
        path = getattr(model, key, "")
        if isinstance(path, str) and path:
            from pipelines.data._disk import require

            require(Path(path).expanduser(), f"model.{key} names a file that does not exist", WEIGHTS_FIX)


def _check_weights_fit(cfg: TrialConfig) -> None:
    """Every weights file of a pretrained network loads into its backbone (keys and shapes fit)."""
    m = cfg.model
    if m.name == "tiny" or not (m.weights or m.cam_weights):
        return
    from pipelines.models import check_weights

    check_weights(cfg)
