"""A study opened once: its spec, its plan, where it lives and its local folder, handed to every step.

``ocr-study run`` opens the study from the spec it was given (:func:`open_study`), ``resume``, ``status``
and ``ui`` from the spec the study saved (:func:`load_study`); the runner, the confirm phase, the summary
and the report after the run all take the same :class:`Study` instead of resolving the spec again.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from record import CONFIRM_TUNE_DIR, SPEC_FILE, TUNE_DIR, Phase
from storage import Store, is_remote, join_uri, local_path, mirror_dir, open_store, pull_record, stored_studies
from study.plan import StudyPlan, plan
from study.spec import (
    DEFAULT_STORAGE,
    SpecError,
    StudySpec,
    check_study_name,
    load_spec,
    shipped_specs,
    spec_hash,
)


class StudyError(RuntimeError):
    """A study cannot be run or resumed as asked; the message says why and what to do."""


class UnknownStudyError(StudyError, ValueError):
    """No study of that name where it was looked for: bad input (the CLI exits 2)."""


@dataclass(frozen=True)
class Study:
    """One study, resolved once.

    Attributes:
        spec: the validated spec (for a loaded study, the one it saved in ``spec.yaml``).
        plan: its cells, trials, epochs and rungs (:func:`study.plan.plan`).
        uri: where it lives, ``<storage>/<name>``: a local folder, or a URI on an object store.
        folder: its local folder (absolute): the study itself, or the local mirror of one on a store.
    """

    spec: StudySpec
    plan: StudyPlan
    uri: str
    folder: Path

    @property
    def name(self) -> str:
        """The study's name."""
        return self.spec.name

    @property
    def remote(self) -> bool:
        """Whether the study lives on an object store (its record is mirrored in :attr:`folder`)."""
        return is_remote(self.uri)

    @functools.cached_property
    def hash(self) -> str:
        """The spec's hash (:func:`study.spec.spec_hash`)."""
        return spec_hash(self.spec)

    @functools.cached_property
    def store(self) -> Store:
        """The study's place on its store (its local folder for a local study)."""
        return open_store(self.uri)

    def tune_storage(self) -> tuple[str, Any]:
        """Tune's ``storage_path`` and ``storage_filesystem``: the study's folder, or its place on the store."""
        if not self.remote:
            return str(self.folder), None
        return self.store.root, self.store.fs

    def tune_path(self, phase: Phase) -> str:
        """Where Tune keeps the experiment of ``phase`` (for ``Tuner.restore``)."""
        root, _ = self.tune_storage()
        return f"{root}/{TUNE_DIR if phase == Phase.SEARCH else CONFIRM_TUNE_DIR}"

    @property
    def experiment(self) -> str:
        """The MLflow experiment: ``tracking.experiment``, else the study's name."""
        return self.spec.tracking.experiment or self.spec.name

    @property
    def where(self) -> str:
        """How commands name the study: ``NAME``, with ``--storage`` when not the default storage."""
        if self.spec.storage == DEFAULT_STORAGE:
            return self.name
        return f"{self.name} --storage {self.spec.storage}"


def study_folder(uri: str) -> Path:
    """The local folder (absolute) of the study at ``uri``: the folder it names, or the mirror of a study
    on an object store."""
    return mirror_dir(uri) if is_remote(uri) else local_path(uri).absolute()


def open_study(spec: StudySpec) -> Study:
    """The study of ``spec``: planned, placed, its local folder named (nothing is written)."""
    return Study(spec, plan(spec), spec.study_dir, study_folder(spec.study_dir))


def resolve_spec(name_or_path: str, overrides: Sequence[str] = ()) -> StudySpec:
    """A spec from a YAML path, or by the name of a shipped spec (``quick``, ``paper``, ``voc``,
    ``voc-masks``), with ``key=value`` overrides applied before it is validated."""
    path, shipped = Path(name_or_path), shipped_specs()
    if not path.is_file() and name_or_path in shipped:
        path = shipped[name_or_path]
    if not path.is_file():
        raise SpecError("", f"{name_or_path!r} not found: give a YAML file or one of {sorted(shipped)}")
    return load_spec(path, overrides)


def load_study_spec(name: str, storage: str | None = None) -> StudySpec:
    """The spec saved in a study's folder, found by name under ``storage`` (default: the spec default).

    A remote study's record is pulled into its local mirror first. The spec's ``storage`` becomes where the
    study was found (a relative storage path in ``spec.yaml`` meant the folder the driver ran in).
    """
    check_study_name(name)  # a name from the command line must not lead out of the storage folder
    if storage and is_remote(storage):  # the record comes from the store into the study's mirror
        uri = join_uri(storage, name)
        pull_record(uri, mirror_dir(uri))
        if not (mirror_dir(uri) / SPEC_FILE).is_file():
            known = stored_studies(storage)
            raise UnknownStudyError(f"no study {name!r} in {storage} (no {SPEC_FILE} there; known: "
                                    f"{known or 'none'}); check the URI")
        return dataclasses.replace(load_spec(mirror_dir(uri) / SPEC_FILE), storage=storage)
    root = local_path(storage or DEFAULT_STORAGE)
    path = root / name / SPEC_FILE
    if not path.is_file():
        known = sorted(p.parent.name for p in root.glob(f"*/{SPEC_FILE}")) if root.is_dir() else []
        raise UnknownStudyError(f"no study {name!r} in {root.absolute()} (known: {known or 'none'}); "
                                "pass --storage if it lives elsewhere")
    spec = load_spec(path)
    if is_remote(spec.storage):
        return spec
    return dataclasses.replace(spec, storage=str(root.absolute()))


def load_study(name: str, storage: str | None = None) -> Study:
    """The study ``name`` under ``storage``, from the spec it saved (see :func:`load_study_spec`)."""
    return open_study(load_study_spec(name, storage))
