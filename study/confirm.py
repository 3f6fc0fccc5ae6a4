"""The confirm phase: choose each cell's best search settings fairly, and plan their confirm trials.

Under early stopping the search phase's trials ran different numbers of epochs, so their last values are
not comparable. :func:`rank_settings` ranks a cell's settings among those that completed every seed when
there are at least ``top_k`` of them, else by the metric at the highest epoch that every ranked setting
reached on every seed (an ASHA rung). :func:`confirm_trials` turns the chosen settings into the flat
configs of the confirm phase: each chosen setting × every confirm seed, to the full budget.
Plain data over the study's record: no Ray, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from record import CONTINUES_FROM, META, Phase, PhaseDoc, StopReason, Tag, ranked, read_epochs, study_trials
from study.handle import Study
from study.spec import ConfirmSpec


@dataclass(frozen=True)
class SeedRun:
    """One search trial of a setting: its metric per epoch and whether it ran every planned epoch."""

    values: dict[int, float]
    completed: bool
    config: dict[str, Any]
    seed: int | None = None
    trial_id: str | None = None
    checkpoint: str | None = None  # its last checkpoint folder (where the record says it is)


@dataclass(frozen=True)
class Ranking:
    """The chosen settings of a cell (best first) and how they were ranked: ``rule`` is ``completed``
    (final values of settings that completed every seed) or ``epoch`` (values at ``epoch``)."""

    settings: tuple[int, ...]
    rule: str
    epoch: int | None


def _ordered(scores: Mapping[int, Sequence[float]], mode: str) -> list[int]:
    """Settings best first by their mean over seeds (:func:`record.ranked`); ties go to the lower setting index."""
    return [setting for setting, _ in ranked({s: scores[s] for s in sorted(scores)}, mode)]


def rank_settings(runs: Mapping[int, Sequence[SeedRun]], mode: str, top_k: int) -> Ranking:
    """Rank one cell's settings by the mean over seeds, fairly under early stopping.

    Args:
        runs: per setting index, its search trials (one per seed; failed trials have no values).
        mode: ``max`` or ``min``.
        top_k: how many settings to choose.
    """
    reached = {s: [r for r in rs if r.values] for s, rs in runs.items()}
    reached = {s: rs for s, rs in reached.items() if rs}
    if not reached:
        return Ranking((), "none", None)
    complete = {s: [r.values[max(r.values)] for r in rs] for s, rs in reached.items()
                if len(rs) == len(runs[s]) and all(r.completed for r in rs)}
    if len(complete) >= top_k:
        return Ranking(tuple(_ordered(complete, mode)[:top_k]), "completed", None)
    epoch = min(max(r.values) for rs in reached.values() for r in rs)
    scores = {s: [r.values[epoch] for r in rs if epoch in r.values] for s, rs in reached.items()}
    return Ranking(tuple(_ordered(scores, mode)[:top_k]), "epoch", epoch)


def search_runs(folder: Path, metric: str) -> dict[str, dict[int, list[SeedRun]]]:
    """The search phase's trials in a study's record, per cell and setting."""
    out: dict[str, dict[int, list[SeedRun]]] = {}
    for path, doc in study_trials(folder):
        if doc.phase != Phase.SEARCH:
            continue
        values = {int(e["epoch"]): float(e[metric]) for e in read_epochs(path)
                  if isinstance(e.get("epoch"), (int, float)) and isinstance(e.get(metric), (int, float))}
        checkpoint = str(Path(doc.artifacts).parent) if doc.artifacts else None
        run = SeedRun(values, doc.stop_reason == StopReason.COMPLETED, dict(doc.config), doc.seed, doc.trial_id,
                      checkpoint)
        out.setdefault(str(doc.cell), {}).setdefault(int(doc.setting or 0), []).append(run)
    return out


def _confirm_config(confirm: ConfirmSpec, run: SeedRun, seed: int, rank: int,
                    searched: Sequence[SeedRun] = ()) -> dict[str, Any]:
    """A search trial's config on another seed, to the confirm budget, tagged with the confirm phase (and, in a
    sequential one, the round its seed belongs to), and scored at its end on the data set's held-out test
    split where it has one (chosen on val, measured on test).

    Where ``searched`` (the setting's search trials) holds a completed trial of exactly this config but for
    the test split, the confirm trial continues it (:func:`continuable`) instead of training it again."""
    config = {**run.config, "seed": seed, "seg.epochs": confirm.epochs, "eval.test": True,
              f"{META}phase": Phase.CONFIRM, f"{META}rank": rank}
    if confirm.rule is not None:
        config[f"{META}round"] = confirm.rule.round_of(seed)
    same = next((r for r in searched if continuable(r, config)), None)
    if same is not None:
        config[f"{META}{Tag.CONTINUES.key}"] = same.trial_id
        config[f"{META}{CONTINUES_FROM}"] = same.checkpoint
    return config


def run_order(configs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The planned confirm trials in the order they start: those that train first, those that continue a
    search trial's checkpoint (an evaluation: seconds) last, each group in the plan's order.

    Longest first: the short ones then fill a core the last long trials leave idle, instead of a long one
    running alone at the end (``quick``'s confirm phase, seven trainings of about 34 s and two continuations
    of about 3 s on two cores: 144 s in the plan's order, 139 s longest first)."""
    return sorted((dict(c) for c in configs), key=lambda c: bool(c.get(f"{META}{CONTINUES_FROM}")))


def continuable(run: SeedRun, config: Mapping[str, Any]) -> bool:
    """Whether a confirm trial of ``config`` can continue the search trial ``run`` from its last checkpoint:
    ``run`` completed its budget on the same config (every key but ``eval.test`` and ``meta.*``) and its
    checkpoint folder is on this machine. On the CPU a trial is deterministic on its seed, so training it again
    repeats the same epochs bit for bit (on a GPU it could differ in the last bits: either is a run of that
    config on that seed); the confirm trial evaluates the checkpoint on the held-out split instead."""
    if not (run.completed and run.trial_id and run.checkpoint and Path(run.checkpoint).is_dir()):
        return False

    def plain(values: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if not k.startswith(META) and k != "eval.test"}

    return plain(run.config) == plain(config)


def choose(study: Study) -> PhaseDoc:
    """The confirm phase's plan from the search phase's record: per cell the chosen settings and how they
    were ranked, and every confirm trial's flat config (cells in the spec's order, then rank, then seed).

    A cell none of whose search trials reported a value gets no confirm trial and says so (``rule: none``).
    A sequential confirm phase plans every seed its rule may run; its searcher runs those still needed.
    """
    confirm = study.spec.confirm
    if confirm is None:
        raise ValueError("the spec has no `confirm` section")
    runs = search_runs(study.folder, confirm.metric)
    cells, trials = [], []
    for cell in study.plan.cells:
        cid = cell.id
        ranking = rank_settings(runs.get(cid, {}), confirm.mode, confirm.top_k)
        cells.append({"id": cid, "settings": list(ranking.settings), "rule": ranking.rule, "epoch": ranking.epoch})
        for rank, setting in enumerate(ranking.settings):
            template = next(r for r in runs[cid][setting] if r.config)
            trials += [_confirm_config(confirm, template, seed, rank, runs[cid][setting]) for seed in confirm.seeds]
    return PhaseDoc(Phase.CONFIRM, trials=len(trials), cells=tuple(cells), configs=tuple(trials),
                    seeds=tuple(confirm.seeds), top_k=confirm.top_k, epochs=confirm.epochs, metric=confirm.metric,
                    mode=confirm.mode, chosen=True, seed_rule=confirm.rule)


def search_differences(study: Study, phase: PhaseDoc) -> dict[str, list[float]]:
    """Per chosen setting (``cell#rank``), its paired differences with the baseline's chosen setting over the
    search seeds where both completed (in the unit the table prints): the seed-to-seed spread the plan of a
    sequential confirm phase starts from. Empty lists where the search ran one seed."""
    from record import reported_scale
    from study.sequential import arm, reference_arm

    if not phase.configs:
        return {}
    metric = str(phase.metric)
    runs = search_runs(study.folder, metric)
    chosen = {f"{c['id']}#{rank}": (str(c["id"]), setting) for c in phase.cells
              for rank, setting in enumerate(c.get("settings") or [])}

    def finals(cell: str, setting: int) -> dict[int, float]:
        return {int(r.seed): r.values[max(r.values)] for r in runs.get(cell, {}).get(setting, [])
                if r.completed and r.values and r.seed is not None}

    ref = reference_arm(list(phase.configs))
    if ref not in chosen:
        return {}
    base = finals(*chosen[ref])
    out = {}
    for key in dict.fromkeys(arm(c) for c in phase.configs):
        if key == ref or key not in chosen:
            continue
        mine = finals(*chosen[key])
        out[key] = [(mine[s] - base[s]) * reported_scale(metric) for s in sorted(mine) if s in base]
    return out
