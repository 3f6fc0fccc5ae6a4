"""Bad input through the real CLI: one exit-code rule (2 = bad input), nothing started or written,
and a study in use by a live driver left alone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from study.cli import main
from study.lock import LOCK_FILE, Holder, acquire, read_holder, release
from study.spec import load_spec
from tests.study.test_tune_study import tiny_doc

OCR_STUDY = str(Path(sys.executable).parent / "ocr-study")


@pytest.mark.slow
def test_a_missing_voc_root_exits_2_before_ray_and_writes_nothing(tmp_path: Path) -> None:
    doc = tiny_doc(tmp_path, tmp_path / "cache")
    doc["trial"].update({"data.name": "voc", "data.root": str(tmp_path / "no-voc-here")})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc))
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path / "ray")}
    proc = subprocess.run([OCR_STUDY, "run", "spec.yaml"], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"{tmp_path / 'no-voc-here'} not found" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "studies").exists()  # no study folder
    assert not (tmp_path / "ray").exists()  # Ray never started (it makes its session folder there)


@pytest.mark.parametrize("command", [["status"], ["resume"], ["report"], ["export"], ["ui"]])
def test_an_unknown_study_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([*command, "ghost", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no study 'ghost'" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_ui_without_any_study_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ui", "--storage", str(tmp_path)]) == 2
    assert "no study in" in capsys.readouterr().err


def test_help_states_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "exit codes" in out and "2  bad input" in out and "1  a failure while running" in out


# ---------------------------------------------------------------- the study lock


@pytest.fixture
def foreign() -> Iterator[psutil.Process]:
    """A live process that is not this one, to name as a lock's holder."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield psutil.Process(proc.pid)
    proc.kill()
    proc.wait()


def _write_lock(folder: Path, pid: int, create_time: float, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                "create_time": create_time, "started": time.time()}))


def test_a_study_held_by_a_live_driver_is_left_alone(tmp_path: Path, foreign: psutil.Process,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    doc = tiny_doc(tmp_path, tmp_path / "cache")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(doc))
    folder = Path(load_spec(doc).study_dir)
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(load_spec(doc).to_dict()))
    (folder / "tune").mkdir()
    (folder / "tune" / "marker").write_text("the running study's files")
    _write_lock(folder, foreign.pid, foreign.create_time())
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    for argv in (["run", str(spec_file)], ["run", str(spec_file), "--fresh"],
                 ["resume", "tiny", "--storage", str(tmp_path / "studies")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"is in use by pid {foreign.pid} on host {socket.gethostname()}" in err, err
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # nothing deleted
    assert read_holder(folder) is not None and read_holder(folder).pid == foreign.pid  # type: ignore[union-attr]


def test_a_stale_lock_is_replaced(tmp_path: Path, foreign: psutil.Process) -> None:
    folder = tmp_path / "study"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(folder, dead.pid, time.time() - 5)  # a dead pid
    acquire(folder)
    holder = read_holder(folder)
    assert holder is not None and holder.same_process(Holder.me())
    release(folder)
    assert not (folder / LOCK_FILE).exists()
    _write_lock(folder, foreign.pid, foreign.create_time() - 100)  # a live pid, but reused: another process
    acquire(folder)
    assert read_holder(folder).same_process(Holder.me())  # type: ignore[union-attr]
    release(folder)
    (folder / LOCK_FILE).write_text("")  # a driver killed while it wrote its lock
    acquire(folder)
    assert read_holder(folder).same_process(Holder.me())  # type: ignore[union-attr]
    release(folder)


def test_a_lock_held_on_another_host_counts_as_live(tmp_path: Path) -> None:
    from study.lock import StudyLockedError

    _write_lock(tmp_path, 1, 0.0, host="elsewhere.example")
    with pytest.raises(StudyLockedError, match=r"on host elsewhere\.example"):
        acquire(tmp_path)


def test_the_command_exits_with_mains_code_after_the_exit_handlers(tmp_path: Path) -> None:
    """``ocr-study`` (:func:`study.cli.console`) skips Python's finalization but not the exit handlers (the
    study's lock, Ray's shutdown) nor anything printed."""
    script = ("import atexit, sys; from study import cli; "
              "atexit.register(lambda: print('exit handler ran', flush=True)); "
              f"sys.argv = ['ocr-study', 'status', 'nope', '--storage', {str(tmp_path)!r}]; cli.console()")
    proc = subprocess.run([sys.executable, "-c", script], text=True, capture_output=True, timeout=120)
    assert proc.returncode == 2
    assert "exit handler ran" in proc.stdout and "nope" in proc.stderr
