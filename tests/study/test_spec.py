"""The study spec: every rule names its key path; malformed specs raise SpecError and nothing else."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.config import TrialConfig, from_flat
from study.spec import (
    DEFAULT_STORAGE,
    GridAxis,
    SearchParam,
    SpecError,
    cell_id,
    load_spec,
    shipped_specs,
    spec_hash,
)
from tests.conftest import examples

VALID: dict[str, Any] = {
    "name": "unit",
    "trial": {"data": {"digits": {"train_size": 100}}, "seg.epochs": 6, "seg.init": "scratch"},
    "grid": {"ocr.selection": ["none", "all", "oc"]},
    "search": {
        "samples": 2,
        "sampler": "tpe",
        "seed": 0,
        "params": {
            "ocr.delta": {"type": "uniform", "low": 0.0, "high": 8.0},
            "ocr.tau": {"type": "loguniform", "low": 0.05, "high": 0.5},
            "seg.width": {"type": "int", "low": 8, "high": 32, "step": 8},
            "ocr.group": {"type": "choice", "values": ["paper", "top1"]},
        },
        "conditions": {"ocr.delta": {"ocr.selection": ["oc"]}},
    },
    "seeds": [0, 1],
    "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 2, "max_epochs": 6,
                  "metric": "val_miou", "mode": "max"},
    "max_concurrent": 2,
    "resources": {"cpus": 1, "gpus": 0},
    "tracking": {"uri": None, "experiment": None},
    "storage": None,
    "budget": {"max_trials": None, "time_s": None},
}


def spec_with(*changes: tuple[str, Any]) -> dict[str, Any]:
    """A deep copy of VALID with ``(dotted path, value)`` changes; the value DELETE removes the key.

    Path parts are split on ``/`` so that dotted trial keys stay whole: ``"search/params/ocr.delta/low"``.
    """
    doc = copy.deepcopy(VALID)
    for path, value in changes:
        *parents, last = path.split("/")
        node = doc
        for part in parents:
            node = node[part]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return doc


DELETE = object()


def error_of(doc: Any) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(doc)
    err = info.value
    assert str(err).startswith(f"{err.path or 'spec'}: ")
    return err


# ---------------------------------------------------------------------------------------------------
# A valid spec and its defaults
# ---------------------------------------------------------------------------------------------------

def test_valid_spec_loads() -> None:
    spec = load_spec(VALID)
    assert spec.name == "unit"
    assert spec.trial.data.digits.train_size == 100 and spec.trial.seg.epochs == 6
    assert spec.grid == (GridAxis("ocr.selection", ("none", "all", "oc")),)
    assert spec.search is not None and [p.key for p in spec.search.params] == [
        "ocr.delta", "ocr.tau", "seg.width", "ocr.group"]
    assert spec.seeds == (0, 1)
    assert (spec.scheduler.type, spec.scheduler.grace_period, spec.scheduler.max_epochs) == ("asha", 2, 6)
    assert spec.storage == DEFAULT_STORAGE and spec.tracking.experiment == "unit"
    assert spec.study_dir == str(Path(DEFAULT_STORAGE) / "unit")
    assert spec.tracking_uri.startswith("sqlite:///") and spec.tracking_uri.endswith("/unit/mlflow.db")


def test_minimal_spec_gets_defaults() -> None:
    spec = load_spec({"name": "tiny"})
    assert spec.trial == TrialConfig()
    assert spec.grid == () and spec.cells == ({},) and cell_id({}) == "base"
    assert spec.search is None and spec.seeds == (0,)
    assert spec.scheduler.type == "none" and spec.scheduler.max_epochs == TrialConfig().seg.epochs
    assert (spec.max_concurrent, spec.resources.cpus, spec.resources.gpus) == (1, 1.0, 0.0)
    assert spec.budget.max_trials is None and spec.budget.time_s is None


def test_a_study_on_an_s3_compatible_store_keeps_the_endpoint_after_its_name() -> None:
    spec = load_spec({"name": "tiny", "storage": "s3://b/studies?endpoint_url=http://minio:9000",
                      "tracking": {"uri": "http://mlflow:5000"}})
    assert spec.study_dir == "s3://b/studies/tiny?endpoint_url=http://minio:9000"


def test_asha_max_epochs_defaults_to_seg_epochs() -> None:
    spec = load_spec(spec_with(("scheduler/max_epochs", DELETE)))
    assert spec.scheduler.max_epochs == 6


def test_trial_takes_nested_and_dotted_keys() -> None:
    spec = load_spec({"name": "t", "trial": {"ocr": {"delta": 2}, "data.digits.val_size": 50,
                                             "data": {"digits": {"train_size": 70}}}})
    expected = {"ocr.delta": 2.0, "data.digits.val_size": 50, "data.digits.train_size": 70}
    assert spec.trial == from_flat(expected)


def test_seeds_override_the_trial_seed() -> None:
    assert load_spec(spec_with(("trial/seed", 7))).trial.seed == 0
    assert load_spec(spec_with(("trial/seed", 7), ("seeds", DELETE))).seeds == (7,)


def test_grid_values_are_coerced_to_the_field_type() -> None:
    spec = load_spec({"name": "t", "grid": {"ocr.weight": [0, 0.5, "2"]}})
    assert spec.grid[0].values == (0.0, 0.5, 2.0)
    assert [cell_id(c) for c in spec.cells] == ["ocr.weight=0.0", "ocr.weight=0.5", "ocr.weight=2.0"]


def test_loads_from_path_text_and_shipped_name(tmp_path: Path) -> None:
    text = yaml.safe_dump(VALID, sort_keys=False)
    path = tmp_path / "unit.yaml"
    path.write_text(text)
    assert load_spec(path) == load_spec(str(path)) == load_spec(text) == load_spec(VALID)
    assert load_spec("quick") == load_spec(shipped_specs()["quick"])


def test_loading_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = load_spec(VALID)
    _ = (spec.tracking_uri, spec.study_dir, spec.to_dict(), spec_hash(spec))
    assert list(tmp_path.iterdir()) == []


def test_to_dict_round_trips_and_hash_is_stable() -> None:
    spec = load_spec(VALID)
    again = load_spec(spec.to_dict())
    assert again == spec and spec_hash(again) == spec_hash(spec)
    assert len(spec_hash(spec)) == 12 and int(spec_hash(spec), 16) >= 0
    assert spec_hash(load_spec(spec_with(("seeds", [0, 2])))) != spec_hash(spec)
    assert load_spec(yaml.safe_dump(spec.to_dict(), sort_keys=False)) == spec


def test_hash_ignores_how_the_spec_was_written() -> None:
    flat = spec_with(("trial", {"data.digits.train_size": 100, "seg.epochs": 6, "seg.init": "scratch", "seed": 5}))
    assert spec_hash(load_spec(flat)) == spec_hash(load_spec(VALID))


# ---------------------------------------------------------------------------------------------------
# Cells and conditions
# ---------------------------------------------------------------------------------------------------

def test_ocr_params_do_not_apply_where_selection_is_none() -> None:
    spec = load_spec(VALID)
    params = {cell_id(c): [p.key for p in spec.cell_params(c)] for c in spec.cells}
    assert params == {
        "ocr.selection=none": ["seg.width"],
        "ocr.selection=all": ["ocr.tau", "seg.width", "ocr.group"],
        "ocr.selection=oc": ["ocr.delta", "ocr.tau", "seg.width", "ocr.group"],
    }


def test_ocr_grid_axes_collapse_where_selection_is_none() -> None:
    grid = {"ocr.selection": ["none", "oc"], "ocr.prior": ["uniform", "identity"]}
    spec = load_spec({"name": "t", "grid": grid})
    assert [cell_id(c) for c in spec.cells] == [
        "ocr.selection=none", "ocr.selection=oc,ocr.prior=uniform", "ocr.selection=oc,ocr.prior=identity"]


def test_base_selection_none_switches_ocr_params_off() -> None:
    doc = spec_with(("trial/ocr.selection", "none"), ("grid", {"seg.width": [8, 16]}),
                    ("search/conditions", DELETE))
    doc["search"]["params"] = {"seg.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
                               "ocr.tau": {"type": "uniform", "low": 0.1, "high": 0.3}}
    assert error_of(doc).path == "search.params.ocr.tau"
    del doc["search"]["params"]["ocr.tau"]
    spec = load_spec(doc)
    assert all([p.key for p in spec.cell_params(c)] == ["seg.lr"] for c in spec.cells)


def test_searched_selection_keeps_ocr_params_everywhere() -> None:
    doc = spec_with(("grid", DELETE), ("search/conditions", DELETE))
    doc["search"]["params"]["ocr.selection"] = {"type": "choice", "values": ["none", "oc"]}
    spec = load_spec(doc)
    assert spec.cells == ({},) and len(spec.cell_params({})) == 5


# ---------------------------------------------------------------------------------------------------
# Each rule raises SpecError naming its key path
# ---------------------------------------------------------------------------------------------------

P = "search/params"
BAD: list[tuple[list[tuple[str, Any]], str, str]] = [
    # name
    ([("name", DELETE)], "name", "is required"),
    ([("name", "a/b")], "name", "A-Z"),
    ([("name", "..")], "name", "folder name"),
    ([("name", "x" * 65)], "name", "1 to 64"),
    ([("name", 5)], "name", "got 5"),
    # top level
    ([("seed", [0])], "seed", "did you mean 'seeds'"),
    ([("max_concurrent", 0)], "max_concurrent", "integer >= 1"),
    ([("max_concurrent", "2")], "max_concurrent", "integer"),
    ([("storage", "")], "storage", "non-empty string"),
    ([("storage", 5)], "storage", "non-empty string"),
    ([("storage", "s3://bucket/studies")], "tracking.uri", "is required when storage is a URI"),
    # trial
    ([("trial", [1, 2])], "trial", "must be a mapping"),
    ([("trial/ocr.detla", 1.0)], "trial.ocr.detla", "did you mean 'ocr.delta'"),
    ([("trial/ocr", {"detla": 1.0})], "trial.ocr.detla", "did you mean 'ocr.delta'"),
    ([("trial/ocr", 5)], "trial.ocr", "is a section"),
    ([("trial/seg.epochs", 0)], "trial.seg.epochs", "must be"),
    ([("trial/seg", {"epochs": 4})], "trial.seg.epochs", "given twice"),
    ([("trial/amp", "maybe")], "trial.amp", "true or false"),
    ([("trial/data.name", "voc")], "trial.data.root", "data.root is empty"),
    ([("trial/ocr.delta", True)], "trial.ocr.delta", "must be a number"),
    # grid
    ([("grid", {})], "grid", "is empty"),
    ([("grid", None)], "grid", "is empty"),
    ([("grid", ["ocr.selection"])], "grid", "must be a mapping"),
    ([("grid/ocr.selection", [])], "grid.ocr.selection", "non-empty list"),
    ([("grid/ocr.selection", "oc")], "grid.ocr.selection", "must be a list"),
    ([("grid/ocr.selection", ["none", "some"])], "grid.ocr.selection[1]", "is not allowed"),
    ([("grid/ocr.selection", ["oc", "oc"])], "grid.ocr.selection[1]", "listed twice"),
    ([("grid/ocr.selecton", ["oc"])], "grid.ocr.selecton", "did you mean 'ocr.selection'"),
    ([("grid/ocr", {"selection": ["oc"]})], "grid.ocr", "is a section"),
    ([("grid/seed", [0, 1])], "grid.seed", "seeds"),
    ([("grid/seg.epochs", [2, 4])], "grid.seg.epochs", "epoch budget"),
    ([("grid/seg.width", [8, [16]])], "grid.seg.width[1]", "must be an integer"),
    ([("grid/ocr.delta", [1.0])], "search.params.ocr.delta", "also a grid axis"),
    ([("grid/data.digits.glyph_max", [40, 60])], "grid.data.digits.glyph_max[1]", "glyph_max"),
    # search
    ([("search", 3)], "search", "must be a mapping"),
    ([("search/samples", DELETE)], "search.samples", "is required"),
    ([("search/samples", 0)], "search.samples", "integer >= 1"),
    ([("search/samples", 1.5)], "search.samples", "integer"),
    ([("search/sampler", "grid")], "search.sampler", "one of ['tpe', 'random']"),
    ([("search/seed", -1)], "search.seed", "integer in"),
    ([("search/sampels", 2)], "search.sampels", "did you mean 'samples'"),
    ([(P, {})], "search.params", "is empty"),
    ([(f"{P}/ocr.dleta", {"type": "uniform", "low": 0, "high": 1})], "search.params.ocr.dleta",
     "did you mean 'ocr.delta'"),
    ([(f"{P}/seed", {"type": "int", "low": 0, "high": 4})], "search.params.seed", "seeds"),
    ([(f"{P}/ocr.delta", [0, 8])], "search.params.ocr.delta", "must be a mapping"),
    ([(f"{P}/ocr.delta/type", DELETE)], "search.params.ocr.delta.type", "one of"),
    ([(f"{P}/ocr.delta/type", "normal")], "search.params.ocr.delta.type", "one of"),
    ([(f"{P}/ocr.delta/lo", 1)], "search.params.ocr.delta.lo", "did you mean 'low'"),
    ([(f"{P}/ocr.delta/step", 1)], "search.params.ocr.delta.step", "unknown key"),
    ([(f"{P}/ocr.delta/low", DELETE)], "search.params.ocr.delta.low", "is required"),
    ([(f"{P}/ocr.delta/low", 9.0)], "search.params.ocr.delta.low", "less than high"),
    ([(f"{P}/ocr.delta/low", "a")], "search.params.ocr.delta.low", "must be a number"),
    ([(f"{P}/ocr.delta/low", True)], "search.params.ocr.delta.low", "must be a number"),
    ([(f"{P}/ocr.delta/high", 500.0)], "search.params.ocr.delta.high", "not a valid ocr.delta"),
    ([(f"{P}/ocr.tau/low", 0.0)], "search.params.ocr.tau.low", "> 0"),
    ([(f"{P}/seg.width/step", 5)], "search.params.seg.width.high", "multiple of step"),
    ([(f"{P}/seg.width/step", 0)], "search.params.seg.width.step", "integer >= 1"),
    ([(f"{P}/seg.width/log", True)], "search.params.seg.width.step", "must be 1 when log"),
    ([(f"{P}/seg.width/log", "yes")], "search.params.seg.width.log", "true or false"),
    ([(f"{P}/seg.width/low", 8.5)], "search.params.seg.width.low", "integer"),
    ([(f"{P}/seg.width/low", 0)], "search.params.seg.width.low", "not a valid seg.width"),
    ([(f"{P}/seg.width/type", "uniform")], "search.params.seg.width.type", "use type int or choice"),
    ([(f"{P}/ocr.group/type", "uniform")], "search.params.ocr.group.type", "use type choice"),
    ([(f"{P}/ocr.group", {"type": "int", "low": 0, "high": 2})], "search.params.ocr.group.type",
     "use type choice"),
    ([(f"{P}/ocr.group/values", ["paper", "best"])], "search.params.ocr.group.values[1]", "not a valid"),
    ([(f"{P}/ocr.group/values", [])], "search.params.ocr.group.values", "non-empty list"),
    ([(f"{P}/ocr.group/values", "paper")], "search.params.ocr.group.values", "must be a list"),
    ([(f"{P}/ocr.selection", {"type": "choice", "values": ["oc"]})], "search.params.ocr.selection",
     "also a grid axis"),
    ([("search/conditions", [1])], "search.conditions", "must be a mapping"),
    ([("search/conditions/ocr.gamma", {"ocr.selection": ["oc"]})], "search.conditions.ocr.gamma",
     "conditions apply to search parameters"),
    ([("search/conditions/ocr.delta", {})], "search.conditions.ocr.delta", "is empty"),
    ([("search/conditions/ocr.delta", {"ocr.prior": ["uniform"]})], "search.conditions.ocr.delta.ocr.prior",
     "refers to a grid axis"),
    ([("search/conditions/ocr.delta", {"ocr.selection": ["oc", "most"]})],
     "search.conditions.ocr.delta.ocr.selection[1]", "not a value of grid.ocr.selection"),
    ([("search/conditions/ocr.delta", {"ocr.selection": ["none"]})], "search.params.ocr.delta",
     "applies in no cell"),
    # seeds
    ([("seeds", [])], "seeds", "non-empty list"),
    ([("seeds", "0,1")], "seeds", "must be a list"),
    ([("seeds", [0, 0])], "seeds[1]", "listed twice"),
    ([("seeds", [-1])], "seeds[0]", "integer in"),
    ([("seeds", [0.5])], "seeds[0]", "integer"),
    ([("seeds", [True])], "seeds[0]", "integer"),
    ([("seeds", [2**40])], "seeds[0]", "integer in"),
    # scheduler
    ([("scheduler", "asha")], "scheduler", "must be a mapping"),
    ([("scheduler/type", "hyperband")], "scheduler.type", "one of ['asha', 'none']"),
    ([("scheduler/grace", 1)], "scheduler.grace", "did you mean 'grace_period'"),
    ([("scheduler/grace_period", 0)], "scheduler.grace_period", "integer in [1, 6]"),
    ([("scheduler/grace_period", 7)], "scheduler.grace_period", "integer in [1, 6]"),
    ([("scheduler/reduction_factor", 1)], "scheduler.reduction_factor", "integer >= 2"),
    ([("scheduler/max_epochs", 8)], "scheduler.max_epochs", "at most trial.seg.epochs = 6"),
    ([("scheduler/max_epochs", 0)], "scheduler.max_epochs", "integer >= 1"),
    ([("scheduler/mode", "maximize")], "scheduler.mode", "one of ['max', 'min']"),
    ([("scheduler/metric", "")], "scheduler.metric", "metric name"),
    ([("scheduler/metric", "val miou")], "scheduler.metric", "metric name"),
    ([("scheduler/type", "none")], "scheduler.grace_period", "only applies to type asha"),
    # resources
    ([("resources/cpus", 0)], "resources.cpus", "number > 0"),
    ([("resources/cpus", True)], "resources.cpus", "number > 0"),
    ([("resources/gpus", -1)], "resources.gpus", "number >= 0"),
    ([("resources/gpus", 1.5)], "resources.gpus", "below 1 or a whole number"),
    ([("resources/gpus", float("nan"))], "resources.gpus", "number"),
    ([("resources/gpu", 1)], "resources.gpu", "did you mean 'gpus'"),
    # tracking, budget
    ([("tracking/uri", "")], "tracking.uri", "non-empty string or null"),
    ([("tracking/experiment", 5)], "tracking.experiment", "non-empty string"),
    ([("tracking/url", "x")], "tracking.url", "did you mean 'uri'"),
    ([("budget/max_trials", 0)], "budget.max_trials", "integer >= 1"),
    ([("budget/time_s", -5)], "budget.time_s", "number > 0"),
    ([("budget/time_s", "1h")], "budget.time_s", "number > 0"),
    ([("budget/trials", 3)], "budget.trials", "did you mean 'max_trials'"),
]


@pytest.mark.parametrize(("changes", "path", "match"), BAD,
                         ids=[f"{p}:{i}" for i, (_, p, _) in enumerate(BAD)])
def test_bad_spec_names_its_key_path(changes: list[tuple[str, Any]], path: str, match: str) -> None:
    err = error_of(spec_with(*changes))
    assert err.path == path, str(err)
    assert match in str(err)


def test_every_grid_cell_is_validated() -> None:
    doc = {"name": "t", "trial": {"data.digits.image_size": 64},
           "grid": {"data.digits.image_size": [32, 64], "data.digits.glyph_max": [20, 40]}}
    err = error_of(doc)
    assert err.path in ("grid.data.digits.glyph_max[1]", "grid.data.digits.image_size[0]")
    assert "cell data.digits.image_size=32,data.digits.glyph_max=40" in str(err)


def test_bounds_are_checked_in_every_cell_where_a_param_applies() -> None:
    doc = {"name": "t", "grid": {"data.digits.image_size": [24, 64]},
           "search": {"samples": 2,
                      "params": {"data.digits.glyph_max": {"type": "int", "low": 20, "high": 40}}}}
    err = error_of(doc)
    assert err.path == "search.params.data.digits.glyph_max.high"
    assert "in cell data.digits.image_size=24" in str(err)


@pytest.mark.parametrize(("source", "match"), [
    ("name: [unclosed", "not valid YAML"),
    ("- a\n- b\n", "must be a mapping"),
    ("", "must be a mapping"),
    ("{1: x}", "keys must be strings"),
    ("no_such_spec.yaml", "not found"),
])
def test_unreadable_sources_are_spec_errors(source: str, match: str) -> None:
    err = error_of(source)
    assert err.path == "" and match in str(err)


def test_a_folder_is_not_a_spec(tmp_path: Path) -> None:
    assert "cannot read" in str(error_of(tmp_path))


def test_non_string_source_is_a_spec_error() -> None:
    assert error_of(42).path == ""


def test_spec_error_survives_pickling() -> None:
    err = pickle.loads(pickle.dumps(SpecError("seeds[1]", "seed 0 is listed twice")))
    assert (err.path, str(err)) == ("seeds[1]", "seeds[1]: seed 0 is listed twice")


def test_dataclasses_validate_on_construction() -> None:
    with pytest.raises(SpecError, match=r"search.params.ocr.delta.low: must be less than high"):
        SearchParam("ocr.delta", "uniform", 2.0, 1.0)
    with pytest.raises(SpecError, match=r"search.params.ocr.delta.values: does not apply to type uniform"):
        SearchParam("ocr.delta", "uniform", 0.0, 1.0, values=(1.0,))
    spec = load_spec(VALID)
    with pytest.raises(SpecError, match=r"^grid.seg.epochs:"):
        dataclasses.replace(spec, grid=(GridAxis("seg.epochs", (2, 4)),))


# ---------------------------------------------------------------------------------------------------
# Property-based: random mutations of a valid spec load or raise SpecError, never anything else
# ---------------------------------------------------------------------------------------------------

PLAUSIBLE: st.SearchStrategy[Any] = st.sampled_from([
    "none", "oc", "all", "uniform", "loguniform", "int", "choice", "asha", "tpe", "cooc_minmax", "paper", "ocr.delta",
    "ocr.selection", "val_miou", "max", "", 0, 1, 2, 8, -1, 0.5, 1e300, 2**70, True, False, None, [], {}])
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | PLAUSIBLE)
JUNK = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8) | PLAUSIBLE.filter(lambda v: isinstance(v, str)),
                                      inner, max_size=3), max_leaves=6)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a dict entry or list item in ``node``."""
    out: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


def _typo(key: str, data: st.DataObject) -> str:
    if not key:
        return "x"
    i = data.draw(st.integers(0, len(key) - 1))
    edit = data.draw(st.sampled_from(["drop", "double", "swap", "case"]))
    if edit == "drop":
        return key[:i] + key[i + 1:]
    if edit == "double":
        return key[:i] + key[i] + key[i:]
    if edit == "swap" and i + 1 < len(key):
        return key[:i] + key[i + 1] + key[i] + key[i + 2:]
    return key[:i] + key[i].swapcase() + key[i + 1:]


def _mutate(doc: dict[str, Any], data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(_paths(doc)))
    parent: Any = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    op = data.draw(st.sampled_from(["delete", "replace", "typo", "add", "non_str_key"]))
    if op == "delete":
        del parent[last]
    elif op == "replace":
        parent[last] = data.draw(JUNK)
    elif op == "typo" and isinstance(parent, dict):
        parent[_typo(last, data)] = parent.pop(last)
    elif op == "add" and isinstance(parent, dict):
        parent[data.draw(st.text(max_size=12))] = data.draw(JUNK)
    elif op == "non_str_key" and isinstance(parent, dict):
        parent[data.draw(st.integers() | st.booleans() | st.none())] = parent.pop(last)
    else:
        parent[last] = data.draw(JUNK)


def _loads_or_spec_error(source: Any) -> None:
    try:
        spec = load_spec(source)
    except SpecError as err:
        assert isinstance(err.path, str) and str(err).startswith(f"{err.path or 'spec'}: ")
        return
    assert load_spec(spec.to_dict()) == spec


@examples(150)
def test_mutated_specs_load_or_raise_spec_error(max_examples: int) -> None:
    @settings(max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def check(data: st.DataObject) -> None:
        doc = copy.deepcopy(VALID)
        for _ in range(data.draw(st.integers(1, 3))):
            if _paths(doc):
                _mutate(doc, data)
        _loads_or_spec_error(doc)

    check()


@examples(60)
def test_mutated_specs_as_yaml_text_load_or_raise_spec_error(max_examples: int) -> None:
    @settings(max_examples=max_examples, deadline=None)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        doc = copy.deepcopy(VALID)
        _mutate(doc, data)
        try:
            text = yaml.safe_dump(doc, sort_keys=False)
        except yaml.YAMLError:  # keys PyYAML cannot write
            return
        _loads_or_spec_error(text)

    check()


@examples(80)
def test_arbitrary_input_loads_or_raises_spec_error(max_examples: int) -> None:
    @settings(max_examples=max_examples, deadline=None)
    @given(st.text(max_size=80) | JUNK)
    def check(source: Any) -> None:
        _loads_or_spec_error(source)

    check()
