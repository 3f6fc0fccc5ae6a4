"""One trial end to end on the tiny config: reports, checkpoints and resume, caching, failures.

The real trials are marked slow. Trials that only read a run share it: ``baseline`` runs the tiny config
(seed 0, 2 epochs, OCR on the segmentation network) once per module, and every test that reruns that
config compares its reports with the baseline's (same seed, same figures: the runs are deterministic).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import pickle
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

import pipelines.stage1_key as stage1_key
import pipelines.stage_cam as stage_cam
from ocr import confusion_matrix, mean_iou, prior_matrix
from pipelines.config import TrialConfig, from_flat, to_flat
from pipelines.data import open_data
from pipelines.engine import NonFiniteLossError
from pipelines.ocr_term import OCRTerm
from pipelines.reporter import ListReporter
from pipelines.trial import run_trial
from tests.conftest import TINY

EPOCH_KEYS = {"epoch", "iteration", "val_miou", "val_oracle_miou", "val_oc_rate", "val_oc_rate_fg", "train_loss",
              "train_ce", "train_ocr", "images_per_s", "pseudo_miou", "best_val_miou"}
RATES = ("val_miou", "val_oracle_miou", "val_oc_rate", "val_oc_rate_fg", "val_pixel_acc", "pseudo_miou")
TIMING = ("images_per_s", "epoch_seconds")  # the only figures that may differ between two runs of one config


def _with(cfg: TrialConfig, **flat: object) -> TrialConfig:
    return from_flat({k.replace("__", "."): v for k, v in flat.items()}, base=cfg)


def _figures(report: Mapping[str, float]) -> dict[str, float]:
    """A report without its timings: what two runs of one config must agree on."""
    return {k: v for k, v in report.items() if k not in TIMING}


def _same_figures(a: list[dict[str, float]], b: list[dict[str, float]]) -> bool:
    return [_figures(r) for r in a] == [pytest.approx(_figures(r), rel=1e-6) for r in b]


def _steps_per_epoch(cfg: TrialConfig) -> int:
    return math.ceil(cfg.data.digits.train_size / cfg.seg.batch_size)


def _saved_epoch(work_dir: Path) -> tuple[int, int]:
    """(epoch, iteration) of the checkpoint a trial left in ``work_dir``."""
    blob = torch.load(work_dir / "checkpoint" / "state.pt", weights_only=True)
    return int(blob["epoch"]), int(blob["iteration"])


def _prior_csv(work_dir: Path) -> torch.Tensor:
    with (work_dir / "checkpoint" / "artifacts" / "prior.csv").open() as f:
        rows = list(csv.reader(f))[1:]
    return torch.tensor([[float(x) for x in row[1:]] for row in rows])


def _assert_sound(report: Mapping[str, float]) -> None:
    """Every figure finite, rates in [0, 1], and the total loss the sum of its parts."""
    assert report.keys() >= EPOCH_KEYS
    assert all(math.isfinite(v) for v in report.values()), report
    for key in RATES:
        if key in report:
            assert 0.0 <= report[key] <= 1.0, (key, report[key])
    assert report["train_loss"] == pytest.approx(report["train_ce"] + report["train_ocr"], rel=1e-5)


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished trial: its reports and its folder."""

    cfg: TrialConfig
    final: dict[str, float]
    reports: list[dict[str, float]]
    checkpoints: list[Path | None]
    work_dir: Path
    artifacts: list[set[str]]  # the files of checkpoint/artifacts when each report arrived


@dataclasses.dataclass
class _WatchingReporter(ListReporter):
    """Also notes which artifacts the checkpoint held at each report."""

    artifacts: list[set[str]] = dataclasses.field(default_factory=list)

    def report(self, metrics: Mapping[str, float], checkpoint_dir: Path | None = None) -> None:
        super().report(metrics, checkpoint_dir)
        folder = None if checkpoint_dir is None else checkpoint_dir / "artifacts"
        self.artifacts.append({p.name for p in folder.iterdir()} if folder and folder.is_dir() else set())


def _run(cfg: TrialConfig, work_dir: Path) -> Run:
    reporter = _WatchingReporter()
    final = run_trial(cfg, reporter, work_dir)
    return Run(cfg, final, reporter.reports, reporter.checkpoints, work_dir, reporter.artifacts)


@pytest.fixture(scope="module")
def module_config(shared_cache: Path) -> TrialConfig:
    """The tiny config for module-scoped runs (``tiny_config`` is per test)."""
    torch.set_num_threads(1)
    return from_flat({**TINY, "cache_dir": str(shared_cache)})


@pytest.fixture(scope="module")
def baseline(module_config: TrialConfig, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The tiny config run once (seed 0, 2 epochs, OCR ``oc`` on the segmentation network)."""
    return _run(module_config, tmp_path_factory.mktemp("baseline"))


@pytest.mark.slow
def test_trial_reports_every_epoch_and_checkpoints(baseline: Run) -> None:
    cfg, reports = baseline.cfg, baseline.reports
    assert len(reports) == cfg.seg.reports == cfg.seg.epochs == 2
    assert [r["epoch"] for r in reports] == [1.0, 2.0]
    assert [r["iteration"] for r in reports] == [r["epoch"] * _steps_per_epoch(cfg) for r in reports]
    for i, report in enumerate(reports):
        _assert_sound(report)
        assert report["best_val_miou"] == max(r["val_miou"] for r in reports[: i + 1])
    assert len({r["pseudo_miou"] for r in reports}) == 1  # stage 1 runs once, before stage 2
    assert baseline.final == reports[-1]
    checkpoint = baseline.work_dir / "checkpoint"
    assert baseline.checkpoints == [checkpoint, checkpoint]
    assert _saved_epoch(baseline.work_dir) == (2, 2 * _steps_per_epoch(cfg))  # the last epoch's state
    artifacts = checkpoint / "artifacts"
    iou = json.loads((artifacts / "class_iou.json").read_text())
    assert next(iter(iou)) == "background" and len(iou) == 11
    seen = [v for v in iou.values() if v is not None]
    assert all(0.0 <= v <= 1.0 for v in seen)
    assert sum(seen) / len(seen) == pytest.approx(reports[-1]["val_miou"], abs=1e-5)  # the last report's
    for name in ("prior.png", "val_examples.png"):
        assert (artifacts / name).read_bytes()[:4] == b"\x89PNG"
    numbers = {"class_iou.json", "prior.csv", "val_examples.npz", "val_examples.json"}
    first, last = baseline.artifacts
    assert numbers <= first and not first & {"prior.png", "val_examples.png"}  # drawn once, at the end
    assert numbers | {"prior.png", "val_examples.png"} <= last
    prior = _prior_csv(baseline.work_dir)  # the prior in force: cooc_minmax, static
    assert cfg.ocr.prior == "cooc_minmax"
    torch.testing.assert_close(prior, prior_matrix(open_data(cfg).train_tags, "cooc_minmax"), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_training_lowers_the_loss_and_stage1_beats_a_trivial_predictor(baseline: Run) -> None:
    first, last = baseline.reports
    for part in ("train_loss", "train_ce", "train_ocr"):
        assert last[part] < first[part], part
    data = open_data(baseline.cfg)
    masks = data.data.train.masks  # type: ignore[attr-defined]  # the digit scenes: in memory
    all_background = mean_iou(confusion_matrix(torch.zeros_like(masks), masks, len(data.class_names) + 1))
    assert 0.0 < all_background < last["pseudo_miou"]


@pytest.mark.slow
def test_another_seed_gives_another_trial(baseline: Run, tmp_path: Path) -> None:
    other = _run(_with(baseline.cfg, seed=1), tmp_path)
    assert [r["epoch"] for r in other.reports] == [1.0, 2.0]
    for mine, theirs in zip(other.reports, baseline.reports, strict=True):
        _assert_sound(mine)
        for key in ("train_loss", "val_oracle_miou", "pseudo_miou"):
            assert mine[key] != theirs[key], key


@pytest.fixture(scope="module")
def without_ocr(baseline: Run, tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, int]:
    """One epoch with other OCR settings (``ocr.selection = none``, another δ), which act on stage 2 only;
    and how many times stage 1 was built for it."""
    builds: list[object] = []
    build = stage_cam._build_tensor

    def counting(*args: Any) -> Any:
        builds.append(args)
        return build(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stage_cam, "_build_tensor", counting)
        run = _run(_with(baseline.cfg, ocr__selection="none", ocr__delta=1.0, seg__epochs=1),
                   tmp_path_factory.mktemp("without-ocr"))
    return run, len(builds)


@pytest.mark.slow
def test_the_ocr_term_is_zero_without_a_selection(baseline: Run, without_ocr: tuple[Run, int]) -> None:
    (report,) = without_ocr[0].reports
    _assert_sound(report)
    assert report["train_ocr"] == 0.0 and report["train_loss"] == report["train_ce"]
    assert all(r["train_ocr"] > 0 for r in baseline.reports)  # ocr.selection = oc


@pytest.mark.slow
def test_an_iteration_budget_reports_every_report_every_steps(module_config: TrialConfig, tmp_path: Path) -> None:
    cfg = _with(module_config, seg__iterations=3, seg__report_every=2)
    run = _run(cfg, tmp_path)
    assert len(run.reports) == cfg.seg.reports == 2
    assert [r["epoch"] for r in run.reports] == [1.0, 2.0]
    assert [r["iteration"] for r in run.reports] == [2.0, 3.0]  # the last period is the shorter rest
    for report in run.reports:
        _assert_sound(report)
    assert _saved_epoch(tmp_path) == (2, 3)


@pytest.mark.slow
def test_the_test_split_is_scored_once_at_the_last_report(baseline: Run, tmp_path: Path) -> None:
    """Issue 10: with ``eval.test`` the last report adds the held-out split's figures; val ones stay."""
    run = _run(_with(baseline.cfg, eval__test=True), tmp_path)
    first, last = run.reports
    assert not any(key.startswith("test_") for key in first)
    assert {"test_miou", "test_oc_rate", "test_oracle_miou"} <= last.keys()
    _assert_sound(last)
    for key in ("test_miou", "test_oc_rate", "test_oracle_miou"):
        assert 0.0 <= last[key] <= 1.0, key
    assert last["test_miou"] != last["val_miou"]
    without_test = [{k: v for k, v in r.items() if not k.startswith("test_")} for r in run.reports]
    assert _same_figures(without_test, baseline.reports)  # scoring the test split changes nothing else
    assert len(json.loads((tmp_path / "checkpoint" / "artifacts" / "class_iou_test.json").read_text())) == 11
    # continuing the finished baseline (as a confirm trial continues its completed search trial) trains
    # nothing and reports the last epoch with the same figures, test split included, as training it again
    continued = ListReporter()
    final = run_trial(_with(baseline.cfg, eval__test=True), continued,
                      tmp_path / "continued", resume_from=baseline.work_dir / "checkpoint", continues=True)
    assert len(continued.reports) == 1 and final == continued.reports[0]
    assert _figures(final) == pytest.approx(_figures(last), rel=1e-6)
    assert _saved_epoch(tmp_path / "continued") == _saved_epoch(baseline.work_dir)
    assert (tmp_path / "continued" / "checkpoint" / "artifacts" / "val_examples.png").is_file()
    restored = ListReporter()  # its own finished checkpoint, as Tune restores a trial after its last report
    run_trial(_with(baseline.cfg, eval__test=True), restored, tmp_path / "restored",
              resume_from=baseline.work_dir / "checkpoint")
    assert restored.reports == []  # nothing reported twice


@pytest.mark.slow
def test_the_final_protocol_runs_only_at_the_last_report(baseline: Run, tmp_path: Path) -> None:
    """Issue 20: ``eval.final_scales`` scores the last report also by the paper's protocol, beside the cheap
    figures; earlier reports stay cheap."""
    run = _run(_with(baseline.cfg, eval__final_scales="0.75,1,1.25", eval__final_flip=True), tmp_path)
    first, last = run.reports
    assert not any("final" in key for key in first)
    final_keys = {"val_final_miou", "val_final_oracle_miou", "val_final_oc_rate_fg"}
    assert final_keys <= last.keys()
    _assert_sound(last)
    for key in final_keys:
        assert 0.0 <= last[key] <= 1.0, key
    assert last["val_final_miou"] != last["val_miou"]
    cheap = [{k: v for k, v in r.items() if "final" not in k} for r in run.reports]
    assert _same_figures(cheap, baseline.reports)  # the cheap figures are those of a trial without it
    assert (tmp_path / "checkpoint" / "artifacts" / "class_iou_final.json").is_file()


class _Crash(RuntimeError):
    pass


class CrashAfterFirstEpoch(ListReporter):
    """Dies right after the first epoch's report, as a killed worker would."""

    def report(self, metrics: Mapping[str, float], checkpoint_dir: Path | None = None) -> None:
        super().report(metrics, checkpoint_dir)
        raise _Crash


@pytest.mark.slow
def test_restart_continues_where_it_stopped(baseline: Run, tmp_path: Path) -> None:
    crashed = CrashAfterFirstEpoch()
    with pytest.raises(_Crash):
        run_trial(baseline.cfg, crashed, tmp_path)
    assert _same_figures(crashed.reports, baseline.reports[:1])  # same seed, same first epoch
    assert _saved_epoch(tmp_path) == (1, _steps_per_epoch(baseline.cfg))
    again = ListReporter()
    run_trial(baseline.cfg, again, tmp_path)  # finds its checkpoint, runs epoch 2 only
    assert [r["epoch"] for r in again.reports] == [2.0]
    assert _same_figures(again.reports, baseline.reports[1:])  # as if it had never stopped
    assert _saved_epoch(tmp_path) == _saved_epoch(baseline.work_dir)


@pytest.mark.slow
def test_resume_from_explicit_checkpoint(tiny_config: TrialConfig, tmp_path: Path) -> None:
    run_trial(_with(tiny_config, seg__epochs=1), ListReporter(), tmp_path / "a")
    later = ListReporter()
    run_trial(tiny_config, later, tmp_path / "b", resume_from=tmp_path / "a" / "checkpoint")
    assert [r["epoch"] for r in later.reports] == [2.0]
    assert later.reports[0]["iteration"] == 2 * _steps_per_epoch(tiny_config)
    _assert_sound(later.reports[0])
    assert later.checkpoints == [tmp_path / "b" / "checkpoint"]  # writes its own folder
    assert _saved_epoch(tmp_path / "a") == (1, _steps_per_epoch(tiny_config))  # and leaves the source alone
    assert _saved_epoch(tmp_path / "b") == (2, 2 * _steps_per_epoch(tiny_config))


@pytest.mark.slow
def test_stage1_is_cached_and_shared(baseline: Run, without_ocr: tuple[Run, int]) -> None:
    entry = stage1_key.stage1_entry(baseline.cfg).with_suffix(".pt")
    assert entry.is_file()  # the baseline built stage 1 into the shared cache
    run, builds = without_ocr
    assert stage1_key.stage1_entry(run.cfg).with_suffix(".pt") == entry  # OCR settings on seg only: same stage 1
    assert builds == 0  # found, not built again
    assert run.reports[0]["pseudo_miou"] == baseline.reports[0]["pseudo_miou"]  # the baseline's pseudo-masks


def test_stage1_key_depends_on_ocr_only_when_ocr_acts_on_cams(tiny_config: TrialConfig) -> None:
    seg_a = stage1_key.stage_key(tiny_config)
    seg_b = stage1_key.stage_key(_with(tiny_config, ocr__delta=1.0))
    cam_a = stage1_key.stage_key(_with(tiny_config, ocr__stage="cam"))
    cam_b = stage1_key.stage_key(_with(tiny_config, ocr__stage="cam", ocr__delta=1.0))
    assert seg_a == seg_b
    assert len({seg_a, cam_a, cam_b}) == 3
    assert seg_a != stage1_key.stage_key(_with(tiny_config, seed=1))


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["cam", "both"])
def test_ocr_on_the_cam_network(baseline: Run, tmp_path: Path, stage: str) -> None:
    (report,) = _run(_with(baseline.cfg, ocr__stage=stage, ocr__selection="all", seg__epochs=1), tmp_path).reports
    _assert_sound(report)
    assert report["pseudo_miou"] != baseline.reports[0]["pseudo_miou"]  # OCR changed the CAM network's training
    assert (report["train_ocr"] > 0) == (stage == "both")  # and acts on stage 2 only with "both"


GROUPS = ("paper", "top1", "rank_bg")
PRIORS = ("posterior", "shuffled")


@pytest.fixture(scope="module")
def group_runs(module_config: TrialConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        Callable[[str, str], Run]]:
    """One 1-epoch trial per (group, prior) with ``ocr.selection = all``, run on first use and kept."""
    runs: dict[tuple[str, str], Run] = {}

    def run(group: str, prior: str) -> Run:
        if (group, prior) not in runs:
            cfg = _with(module_config, ocr__group=group, ocr__prior=prior, ocr__selection="all", seg__epochs=1)
            runs[group, prior] = _run(cfg, tmp_path_factory.mktemp(f"{group}-{prior}"))
        return runs[group, prior]

    yield run


@pytest.mark.slow
@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("prior", PRIORS)
def test_every_group_and_a_stateful_prior_train(group_runs: Callable[[str, str], Run], group: str,
                                                 prior: str) -> None:
    run = group_runs(group, prior)
    (report,) = run.reports
    _assert_sound(report)
    assert report["train_ocr"] > 0
    in_force = _prior_csv(run.work_dir)
    start = prior_matrix(open_data(run.cfg).train_tags, prior, seed=run.cfg.seed)
    if prior == "posterior":  # stateful: it starts at the identity and follows the network's predictions
        torch.testing.assert_close(start, torch.eye(start.shape[0]))
        assert not torch.allclose(in_force, start, atol=1e-3)
    else:  # static: the seeded permutation of cooc_minmax, as built
        torch.testing.assert_close(in_force, start, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(start, prior_matrix(open_data(run.cfg).train_tags, "cooc_minmax"))


@pytest.mark.slow
@pytest.mark.parametrize("prior", PRIORS)
def test_the_groups_are_different_losses(group_runs: Callable[[str, str], Run], prior: str) -> None:
    ocr_terms = {group: group_runs(group, prior).reports[0]["train_ocr"] for group in GROUPS}
    assert len(set(ocr_terms.values())) == len(GROUPS), ocr_terms


@pytest.mark.slow
def test_non_finite_loss_names_epoch_and_part(tiny_config: TrialConfig, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def nan_loss(self: OCRTerm, logits: torch.Tensor, tags: torch.Tensor, valid: object) -> torch.Tensor:
        return logits.sum() * float("nan")

    monkeypatch.setattr(OCRTerm, "__call__", nan_loss)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1: the 'ocr' loss is nan") as err:
        run_trial(_with(tiny_config, ocr__selection="all"), ListReporter(), tmp_path)
    assert err.value.stage == "seg" and err.value.part == "ocr"
    again = pickle.loads(pickle.dumps(err.value))  # as Ray sends it from a worker to the driver
    assert (again.stage, again.epoch, again.part, str(again)) == ("seg", 1, "ocr", str(err.value))
    assert not (tmp_path / "checkpoint" / "state.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("fault", "fails"), [("train.step[stage=seg,epoch=2]=return", True),
                                              ("train.step[stage=seg,epoch=2,seed=0]=*return", True),
                                              # another seed, another stage: one trial checks both
                                              ("train.step[stage=seg,epoch=2,seed=7]=*return;"
                                               "train.step[stage=cam,epoch=2]=*return", False)])
def test_injected_fault_hits_the_named_epoch_and_seed(baseline: Run, tmp_path: Path,
                                                      failpoints: Callable[[str], None], fault: str,
                                                      fails: bool) -> None:
    """A failpoint fails the epoch it names and nothing before it; one that names another seed or stage
    leaves the trial as it is without faults (the same seed gives the same figures)."""
    failpoints(fault)
    reporter = ListReporter()
    if fails:
        with pytest.raises(NonFiniteLossError, match=r"epoch 2: the 'total' loss is nan"):
            run_trial(baseline.cfg, reporter, tmp_path)
        assert _same_figures(reporter.reports, baseline.reports[:1])  # the first epoch went through
        assert _saved_epoch(tmp_path) == (1, _steps_per_epoch(baseline.cfg))  # a restart continues from it
    else:
        run_trial(baseline.cfg, reporter, tmp_path)
        assert _same_figures(reporter.reports, baseline.reports)


def test_flat_round_trip(tiny_config: TrialConfig) -> None:
    assert from_flat(to_flat(tiny_config)) == tiny_config
    assert dataclasses.replace(tiny_config, seed=3).seed == 3
