"""How a record's metric is named and scaled in MLflow, and back.

MLflow is a view of the record, read by people in its UI: there a metric reads as the CLI and the report
print it. IoU, accuracy and OC rates (:data:`record._facts.PERCENT_METRICS`) are logged in percent, with
``pct`` in their name (MLflow refuses ``%`` in a metric key); the others as they are. MLflow's chart view
puts a key ``section/name`` in the section ``section`` and orders sections by name, then the keys without a
``/``; so each key gets a numbered section saying what it is, and the chart view reads from the headline
down: ``1 val`` (mIoU and OC rates first), ``2 test``, ``3 train``, ``4 class IoU``, ``5 time``.

``val_miou`` is ``1 val/miou pct`` (×100), ``test_oc_rate_fg`` is ``2 test/oc_rate_fg pct``,
``train_loss`` is ``3 train/loss``, the per-class ``iou/digit 3`` is ``4 class IoU/digit 3 pct``.
:func:`record_metric` reads a key back (and the record's own names, as MLflow held them before).
"""

from __future__ import annotations

from record._facts import PERCENT_METRICS

PCT = " pct"  # the unit's mark at the end of a percent-valued key
SECTIONS = {"val_": "1 val", "test_": "2 test", "train_": "3 train"}
OTHER = {"best_val_miou": "1 val/miou_best",  # after "miou" in the chart view (its sort puts " " before "_")
         "pseudo_miou": "3 train/pseudo_miou",
         "images_per_s": "5 time/images_per_s", "epoch_seconds": "5 time/epoch_seconds",
         "trial_cpu_s": "5 time/trial_cpu_s", "trial_wall_s": "5 time/trial_wall_s"}
CLASS_SECTION = "4 class IoU"  # per-class validation IoU, one key per class
CLASS_PREFIX = "iou/"  # the per-class IoU as the trial's artifacts name it (``iou/<class>``)


def is_percent(metric: str) -> bool:
    """Whether a record's metric is a share read in percent (IoU, accuracy, OC rates)."""
    return metric.startswith(CLASS_PREFIX) or any(part in metric for part in PERCENT_METRICS)


def mlflow_metric(metric: str) -> tuple[str, float]:
    """A record's metric as MLflow holds it: its key, and the factor its value is multiplied by (100 for
    percent, else 1). A metric of no known section keeps its name (MLflow's "Model metrics" section)."""
    if metric.startswith(CLASS_PREFIX):
        key = f"{CLASS_SECTION}/{metric[len(CLASS_PREFIX):]}"
    elif metric in OTHER:
        key = OTHER[metric]
    else:
        prefix = next((p for p in SECTIONS if metric.startswith(p)), None)
        key = metric if prefix is None else f"{SECTIONS[prefix]}/{metric[len(prefix):]}"
    if is_percent(metric):
        return f"{key}{PCT}", 100.0
    return key, 1.0


def record_metric(key: str) -> tuple[str, float] | None:
    """The record's metric an MLflow key holds, and the factor that turns MLflow's value back into the
    record's (0.01 for percent); ``None`` for a key that is no trial metric of the record (per-class IoU:
    the record keeps it as an artifact). A key without a section is the record's own name."""
    percent = key.endswith(PCT)
    base = key[: -len(PCT)] if percent else key
    factor = 0.01 if percent else 1.0
    if base.startswith(f"{CLASS_SECTION}/"):
        return None
    for name, mapped in OTHER.items():
        if base == mapped:
            return name, factor
    for prefix, section in SECTIONS.items():
        if base.startswith(f"{section}/"):
            return f"{prefix}{base[len(section) + 1:]}", factor
    if "/" in base:
        return None  # a key of another layout (a study run's summary, a per-class IoU of an older version)
    return base, factor
