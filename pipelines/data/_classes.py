"""Which digits share an image: the designed class co-occurrence of the digit scenes.

Digit 0 plays a "person": it takes one of an image's object slots with probability ``person_prob``
and is never drawn otherwise. The other digits fill the remaining slots, each at most once, under one of
three rules for the confusable pairs (3, 8), (1, 7), (4, 9), (5, 6):

- ``exclusive``: the two digits of a pair never share an image (like cow and horse in VOC);
- ``paired``: an image with room for two more digits holds one pair (chosen uniformly) with probability
  ``pair_prob``; its other slots are filled uniformly, so more pairs can occur by chance;
- ``random``: uniform draws without replacement, pairs ignored.
"""

from __future__ import annotations

import numpy as np

from pipelines.config import DigitsConfig

CONFUSABLE_PAIRS = ((3, 8), (1, 7), (4, 9), (5, 6))
PERSON = 0


def active_pairs(num_classes: int) -> tuple[tuple[int, int], ...]:
    """The confusable pairs whose two digits are both below ``num_classes``."""
    return tuple((a, b) for a, b in CONFUSABLE_PAIRS if a < num_classes and b < num_classes)


def object_count_probs(low: int, high: int) -> np.ndarray:
    """P(number of objects) over ``low..high``: 3 : 4 : … : 4 : 3 (0.3 / 0.4 / 0.3 for 1..3)."""
    weights = np.full(high - low + 1, 4.0)
    weights[[0, -1]] = 3.0
    return weights / weights.sum()


def _partners_of(chosen: list[int], pairs: tuple[tuple[int, int], ...]) -> set[int]:
    return {b for a, b in pairs if a in chosen} | {a for a, b in pairs if b in chosen}


def sample_classes(rng: np.random.Generator, slots: int, cfg: DigitsConfig,
                   pairs: tuple[tuple[int, int], ...]) -> list[int]:
    """The digits of one image in paste order (later on top); fewer than ``slots`` when none is eligible.

    Args:
        rng: the split's generator.
        slots: how many glyphs the image holds.
        cfg: ``num_classes``, ``person_prob``, ``cooccurrence`` and ``pair_prob`` are used.
        pairs: the confusable pairs in play (:func:`active_pairs`).
    """
    chosen = [PERSON] if rng.random() < cfg.person_prob else []
    if (cfg.cooccurrence == "paired" and pairs and slots - len(chosen) >= 2
            and rng.random() < cfg.pair_prob):
        chosen += pairs[rng.integers(len(pairs))]
    while len(chosen) < slots:
        banned = _partners_of(chosen, pairs) if cfg.cooccurrence == "exclusive" else set()
        eligible = [c for c in range(1, cfg.num_classes) if c not in chosen and c not in banned]
        if not eligible:
            break
        chosen.append(eligible[rng.integers(len(eligible))])
    return [int(c) for c in rng.permutation(chosen)]
