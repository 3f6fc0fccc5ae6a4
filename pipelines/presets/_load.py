"""Read a shipped preset: a nested trial config in YAML, as a spec's ``trial:`` section is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipelines._keys import nested_to_flat

FOLDER = Path(__file__).parent
PRESETS = tuple(sorted(p.stem for p in FOLDER.glob("*.yaml")))


def load_preset(name: str) -> dict[str, Any]:
    """The preset ``name`` as flat trial keys (``{"seg.lr": 7e-4, ...}``), for :func:`~pipelines.config.from_flat`.

    Raises ``ValueError`` naming the shipped presets when ``name`` is not one of them.
    """
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} is not shipped; choose one of {list(PRESETS)}")
    tree = yaml.safe_load((FOLDER / f"{name}.yaml").read_text())
    if not isinstance(tree, dict):
        raise ValueError(f"preset {name!r} is not a mapping of trial keys")
    return nested_to_flat(tree)
