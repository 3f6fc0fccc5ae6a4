"""A disk cache for expensive, shared results (data sets, stage-1 pseudo-masks).

Entries are keyed by a hash of everything they depend on. Two processes asking for the same key at
once compute it once: the first takes a lock and builds, the other waits on the lock and reads.

Every entry has a checksum beside it (``<entry>.sha256``, the SHA-256 of the entry's bytes). Both are
written to temporary files and renamed into place, so a crash never leaves a half-written entry that
passes for a whole one. An entry that is missing its checksum, does not match it, or cannot be read
(truncated, empty, garbage) is logged with its path and built again, under the lock.

The lock is ``flock(2)`` on ``<entry>.lock``: the kernel releases it when its holder dies, however it
dies, and the holder deletes the file when it is done, so no lock outlives its holder.

An entry can also be :class:`Shared` through an object store (the nodes of a cluster that share no
filesystem): a node that misses it locally takes the store's lease on it, builds and publishes it
whole, or waits for the node that holds the lease and downloads what it published
(:func:`storage.fetch_or_build`). Each node keeps its local copy as above.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from pipelines._keys import config_key  # noqa: F401  (the stage-1 and data caches' key)

log = logging.getLogger(__name__)
T = TypeVar("T")
CHECKSUM_SUFFIX = ".sha256"
LOCK_SUFFIX = ".lock"
_CHUNK = 1 << 22


@dataclass(frozen=True)
class Shared:
    """Where a cache entry is shared across nodes: a store URI and the object's name under it."""

    uri: str
    name: str

    def __post_init__(self) -> None:
        if "://" not in self.uri or not self.name:
            raise ValueError(f"Shared({self.uri!r}, {self.name!r}): give a store URI and an object name")

    def fetch_or_build(self, target: Path, build: Callable[[Path], None]) -> bool:
        """``target`` as a copy of the shared object, built by ``build(tmp)`` on one node only."""
        from storage import fetch_or_build, open_store

        built = fetch_or_build(open_store(self.uri), self.name, target, build)
        log.info("stage shared through %s/%s: %s", self.uri, self.name, "built here" if built else "downloaded")
        return built


class CorruptEntryError(RuntimeError):
    """A cache entry's bytes do not match its checksum (or it has none)."""


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write tensors and JSON metadata atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"tensors": tensors, "meta": json.dumps(meta)}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read what :func:`save_tensors` wrote (``weights_only=True``: plain tensors and strings only)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return blob["tensors"], json.loads(blob["meta"])


def checksum_path(path: Path) -> Path:
    """Where the checksum of the entry ``path`` is kept."""
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path) -> None:
    """Raise :class:`CorruptEntryError` unless ``path`` matches the checksum written beside it."""
    try:
        expected = checksum_path(path).read_text().strip()
    except FileNotFoundError as err:
        raise CorruptEntryError("it has no checksum file") from err
    if file_sha256(path) != expected:
        raise CorruptEntryError("its bytes do not match its checksum")


def _write(path: Path, value: T, save: Callable[[Path, T], None]) -> None:
    """Save ``value`` with its checksum: both to temporary files, then renamed (the entry last)."""
    _install(path, lambda tmp: save(tmp, value))


def _install(path: Path, make: Callable[[Path], object]) -> None:
    """Have ``make(tmp)`` write the entry, then put it and its checksum in place (the entry last)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.build")
    tmp_sum = path.with_name(f".{path.name}.{os.getpid()}{CHECKSUM_SUFFIX}")
    try:
        make(tmp)
        tmp_sum.write_text(file_sha256(tmp) + "\n")
        os.replace(tmp_sum, checksum_path(path))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_sum.unlink(missing_ok=True)


_MISSING: Any = object()


def _read(path: Path, load: Callable[[Path], T]) -> T:
    """The entry at ``path``, or ``_MISSING`` when there is none or it is bad (then it is logged)."""
    if not path.exists():
        return _MISSING
    try:
        verify(path)
        return load(path)
    except Exception as err:  # truncated, empty, garbage: any reader error means "build it again"
        # The reader's own message is not shown: torch's advises weights_only=False, which must not be
        # done for a file of unknown origin.
        reason = str(err) if isinstance(err, CorruptEntryError) else f"{type(err).__name__} while reading it"
        log.warning("cache entry %s is unusable (%s); building it again", path, reason)
        return _MISSING


@contextlib.contextmanager
def entry_lock(path: Path) -> Iterator[None]:
    """Hold the lock of the entry ``path`` (an exclusive ``flock`` on ``<path>.lock``) for the block.

    The lock file is deleted on release. A waiter that then holds a deleted file's lock sees that the
    path no longer names the file it locked, and locks the new file instead.
    """
    lock_path = path.with_name(path.name + LOCK_SUFFIX)
    while True:
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(fd)


def cached(path: Path, build: Callable[[], T], save: Callable[[Path, T], None],
           load: Callable[[Path], T], shared: Shared | None = None) -> T:
    """Return the entry at ``path``; build and save it under the entry's lock if it is missing or bad.

    With ``shared``, a missing entry is first looked for in the store, and built (on one node of all)
    and published there when it is not: see :class:`Shared`.
    """
    value = _read(path, load)
    if value is not _MISSING:
        return value
    path.parent.mkdir(parents=True, exist_ok=True)
    with entry_lock(path):
        value = _read(path, load)  # another process built it while we waited
        if value is not _MISSING:
            log.info("cache hit after waiting: %s", path)
            return value
        log.info("cache miss, building: %s", path)
        if shared is not None:
            _install(path, lambda tmp: shared.fetch_or_build(tmp, lambda out: save(out, build())))
            return load(path)
        value = build()
        _write(path, value, save)
        return value


def cached_folder(folder: Path, fill: Callable[[Path], None], load: Callable[[Path], T],
                  shared: Shared | None = None) -> T:
    """Return ``load(folder)``, first filling the folder under a file lock if it is missing.

    ``fill`` writes into a temporary sibling folder, which is then renamed into place: a folder that
    exists is always complete, and a crash leaves only a temporary folder behind. With ``shared``, the
    folder travels through the store as one tar object (see :class:`Shared`).
    """
    if shared is not None:
        fill = _shared_fill(fill, shared)
    if folder.is_dir():
        return load(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with entry_lock(folder):
        if not folder.is_dir():
            log.info("cache miss, building: %s", folder)
            tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                fill(tmp)
                os.replace(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return load(folder)


def _shared_fill(fill: Callable[[Path], None], shared: Shared) -> Callable[[Path], None]:
    """``fill`` through the store: the folder is built on one node, published as a tar, unpacked here."""

    def build_tar(out: Path) -> None:
        work = out.with_name(f"{out.name}.dir")
        work.mkdir()
        try:
            fill(work)
            with tarfile.open(out, "w") as tar:
                for path in sorted(work.iterdir()):
                    tar.add(path, arcname=path.name)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def shared_fill(tmp: Path) -> None:
        archive = tmp.with_name(f"{tmp.name}.tar")
        try:
            shared.fetch_or_build(archive, build_tar)
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        finally:
            archive.unlink(missing_ok=True)

    return shared_fill
