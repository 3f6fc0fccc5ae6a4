"""The disk cache under faults: bad entries are rebuilt (data set and stage 1, through ``ocr-study train``),
and no lock outlives its holder."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pipelines.cache import LOCK_SUFFIX, cached, checksum_path, load_tensors, save_tensors
from study.cli import main
from tests.conftest import TINY


def _save(path: Path, value: torch.Tensor) -> None:
    save_tensors(path, {"x": value}, {})


def _load(path: Path) -> torch.Tensor:
    return load_tensors(path)[0]["x"]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def _flip_and_resum(path: Path) -> None:
    """Garbage that carries a matching checksum: the reader itself must fail and be survived."""
    from pipelines.cache import file_sha256

    path.write_bytes(b"PK\x03\x04 not a torch file")
    checksum_path(path).write_text(file_sha256(path))


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "truncated": _truncate, "empty": _empty, "garbage": _garbage, "garbage_with_checksum": _flip_and_resum,
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS))
def test_a_bad_entry_is_logged_and_built_again(tmp_path: Path, corrupt: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "entry.pt"
    builds: list[int] = []

    def build() -> torch.Tensor:
        builds.append(1)
        return torch.arange(1000)

    assert torch.equal(cached(path, build, _save, _load), torch.arange(1000))
    CORRUPTIONS[corrupt](path)
    with caplog.at_level(logging.WARNING, logger="pipelines.cache"):
        assert torch.equal(cached(path, build, _save, _load), torch.arange(1000))
    assert len(builds) == 2
    assert str(path) in caplog.text and "building it again" in caplog.text
    assert "weights_only" not in caplog.text
    assert torch.equal(cached(path, build, _save, _load), torch.arange(1000)) and len(builds) == 2  # whole again
    assert not list(tmp_path.glob(f"*{LOCK_SUFFIX}")) and not list(tmp_path.glob(".*"))


def test_an_entry_without_its_checksum_is_built_again(tmp_path: Path) -> None:
    path = tmp_path / "entry.pt"
    cached(path, lambda: torch.ones(3), _save, _load)
    checksum_path(path).unlink()
    assert torch.equal(cached(path, lambda: torch.zeros(3), _save, _load), torch.zeros(3))


def test_a_failed_build_leaves_no_entry_and_no_lock(tmp_path: Path) -> None:
    def build() -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cached(tmp_path / "entry.pt", build, _save, _load)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


HOLDER = """
import sys, time
from pathlib import Path
import torch
from pipelines.cache import cached, save_tensors, load_tensors
def build():
    print("building", flush=True)
    time.sleep(600)
cached(Path(sys.argv[1]), build, lambda p, v: None, lambda p: None)
"""


@pytest.mark.slow
def test_a_killed_holder_leaves_no_lock(tmp_path: Path) -> None:
    """A builder killed with SIGKILL cannot clean up: its lock dies with it (the kernel drops the flock),
    the next caller builds at once, and that caller removes the lock file."""
    path = tmp_path / "entry.pt"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parents[2])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "building"
        assert path.with_name(path.name + LOCK_SUFFIX).exists()  # held, while the holder lives
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    result: list[torch.Tensor] = []
    worker = threading.Thread(target=lambda: result.append(cached(path, lambda: torch.ones(2), _save, _load)))
    worker.start()
    worker.join(timeout=120)  # a lock still held would block it for good: the join's limit is only a guard
    assert result and torch.equal(result[0], torch.ones(2)), "the dead holder's lock was still held"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.pt", "entry.pt.sha256"]


def test_concurrent_builders_build_once(tmp_path: Path) -> None:
    path = tmp_path / "entry.pt"
    builds: list[int] = []
    lock = threading.Lock()

    def build() -> torch.Tensor:
        with lock:
            builds.append(1)
        time.sleep(0.3)
        return torch.ones(4)

    threads = [threading.Thread(target=cached, args=(path, build, _save, _load)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert not path.with_name(path.name + LOCK_SUFFIX).exists()


@pytest.mark.slow
@pytest.mark.parametrize("corrupt", ["truncated", "empty", "garbage"])
def test_train_survives_corrupt_data_and_stage1_caches(tmp_path: Path, corrupt: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    args = ["train", *(f"{k}={v}" for k, v in TINY.items()), f"cache_dir={cache}", "seg.epochs=1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    entries = sorted(cache.glob("*/*.pt"))
    assert {p.parent.name for p in entries} == {"data", "stage1"}
    for entry in entries:
        CORRUPTIONS[corrupt](entry)
    with caplog.at_level(logging.WARNING, logger="pipelines.cache"):
        assert main([*args, "--out", str(tmp_path / "b")]) == 0
    for entry in entries:
        assert f"cache entry {entry} is unusable" in caplog.text
        torch.load(entry, weights_only=True)  # whole again
    assert not list(cache.rglob(f"*{LOCK_SUFFIX}"))
