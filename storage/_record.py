"""A study's record on a store: the local mirror of a study on a remote store, its record pushed and pulled.

The store itself (URIs, filesystems, whole-object writes, leases, build-once) is :mod:`storage._store`.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import pyarrow.fs as pafs

from record import CONFIRM_TUNE_DIR, HOME, MLFLOW_ARTIFACTS_DIR, MLFLOW_DB, SPEC_FILE, TUNE_DIR
from storage._store import join_uri, open_store, plain_uri

# A study on a remote store runs in a local working folder (its mirror); its record (everything but
# Tune's own experiment, which Tune writes to the store itself) is pushed to the store after a run and
# pulled from it before resume, status, report and export.
MIRRORS = Path(HOME) / "mirrors"
SHARED_CACHE = "cache"  # the stage-1 cache of a study on a remote store, under its prefix
MLFLOW_ARTIFACTS = "mlflow-artifacts"  # MLflow's artifacts of a study on a remote store, under its prefix
# Not the record: Tune's own experiments (written to the store by Tune itself), the local MLflow store and
# its artifacts, the shared stage-1 cache and MLflow's artifacts on the store. Folders end with "/", so a
# name is never skipped for its prefix alone.
_NOT_SYNCED = (f"{TUNE_DIR}/", f"{CONFIRM_TUNE_DIR}/", f"{MLFLOW_ARTIFACTS_DIR}/", MLFLOW_DB, f"{SHARED_CACHE}/",
               f"{MLFLOW_ARTIFACTS}/")


def mlflow_artifacts(study_uri: str) -> str:
    """Where MLflow keeps the artifacts of the study at ``study_uri`` (a remote store): under its prefix."""
    return plain_uri(join_uri(study_uri, MLFLOW_ARTIFACTS))


def mirror_dir(study_uri: str) -> Path:
    """The local working folder of the study at ``study_uri`` (absolute; one per URI)."""
    parsed = urllib.parse.urlparse(study_uri)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{parsed.scheme}_{parsed.netloc}{parsed.path}").strip("_")
    return (MIRRORS / safe).absolute()


def stored_studies(storage: str) -> list[str]:
    """The names of the studies on the store at ``storage``: the folders under it holding a spec."""
    store = open_store(storage)
    return [name for name in store.names() if store.exists(name, SPEC_FILE)]


def push_record(folder: Path, study_uri: str) -> int:
    """Copy the study record in ``folder`` to the store (Tune's folder excluded); returns files copied."""
    store, count = open_store(study_uri), 0
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not rel.startswith(_NOT_SYNCED) and not path.name.endswith((".lock", ".tmp")):
            store.write_bytes(path.read_bytes(), rel)
            count += 1
    return count


def pull_record(study_uri: str, folder: Path) -> int:
    """Copy the study record from the store into ``folder`` (Tune's folder excluded); returns files copied."""
    store, count = open_store(study_uri), 0
    selector = pafs.FileSelector(store.root, recursive=True, allow_not_found=True)
    for info in store.fs.get_file_info(selector):
        rel = info.path[len(store.root) + 1:]
        if info.type != pafs.FileType.File or rel.startswith(_NOT_SYNCED) or rel.endswith(".lease"):
            continue
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.read_bytes(rel) or b"")
        count += 1
    return count
