"""A study opened once (study.handle): where it lives, its local folder, a spec saved and found again; a
``file://`` storage is a local folder everywhere (issue 22: ``"://" in`` called it remote)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from record import SPEC_FILE, Phase
from storage import is_remote, local_path, mirror_dir
from study.handle import UnknownStudyError, load_study, open_study
from study.spec import load_spec


def _save(spec_doc: dict[str, object], folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / SPEC_FILE).write_text(yaml.safe_dump(load_spec(spec_doc).to_dict(), sort_keys=False))


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_a_local_storage_by_path_or_file_uri_is_one_local_folder(tmp_path: Path, scheme: str) -> None:
    storage = f"{scheme}{tmp_path / 'studies'}"
    spec = load_spec({"name": "s", "storage": storage})  # no tracking.uri needed: the SQLite file is local
    study = open_study(spec)
    assert not study.remote and not is_remote(storage)
    assert study.folder == tmp_path / "studies" / "s" and Path(spec.study_dir) == study.folder
    assert spec.tracking_uri == f"sqlite:///{tmp_path / 'studies' / 's' / 'mlflow.db'}"
    assert study.tune_storage() == (str(study.folder), None)
    assert study.tune_path(Phase.CONFIRM) == f"{study.folder}/tune-confirm"
    _save({"name": "s", "storage": storage}, study.folder)
    found = load_study("s", storage)  # found where it is, by either spelling of the folder
    assert found.folder == study.folder and found.spec.storage == str(tmp_path / "studies")


def test_a_study_on_an_object_store_runs_in_its_local_mirror() -> None:
    spec = load_spec({"name": "s", "storage": "s3://bucket/studies", "tracking": {"uri": "sqlite:///x.db"}})
    study = open_study(spec)
    assert study.remote and study.uri == "s3://bucket/studies/s" and study.folder == mirror_dir(study.uri)
    assert study.where == "s --storage s3://bucket/studies"


def test_an_unknown_study_names_the_ones_there(tmp_path: Path) -> None:
    _save({"name": "alpha", "storage": str(tmp_path)}, tmp_path / "alpha")
    with pytest.raises(UnknownStudyError, match=r"no study 'alhpa' in .*known: \['alpha'\]"):
        load_study("alhpa", f"file://{tmp_path}")


def test_local_path_reads_a_file_uri_and_refuses_a_remote_one(tmp_path: Path) -> None:
    assert local_path(f"file://{tmp_path}/a%20b") == tmp_path / "a b"
    assert local_path("~/x") == Path.home() / "x"
    with pytest.raises(ValueError, match="object store"):
        local_path("s3://b/x")
