"""Failpoints: parsing, conditions, counts in one process and across processes, and each action."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from record import FAILPOINT_DIR_ENV, FAILPOINTS_ENV, FailpointError, failpoint, fired
from record._failpoints import parse


def test_unset_nothing_fires(failpoints: Callable[[str], None]) -> None:
    failpoints("")
    assert failpoint("train.step", epoch=1) is False


def test_a_spec_reads_names_conditions_counts_and_actions() -> None:
    points = parse("a.b[epoch=3, seed>=1]=kill; c-d=2*return ;e=*sleep(0.5)")
    (ab,), (cd,), (e,) = points["a.b"], points["c-d"], points["e"]
    assert (ab.conditions, ab.action, ab.times) == ((("epoch", "=", "3"), ("seed", ">=", "1")), "kill", 1)
    assert (cd.action, cd.times) == ("return", 2)
    assert (e.action, e.arg, e.times) == ("sleep", "0.5", None)


@pytest.mark.parametrize("bad", ["a.b", "a.b=explode", "a.b[epoch]=kill", "a.b[epoch<3]=kill", "=kill"])
def test_a_malformed_spec_is_an_error_that_shows_the_form(bad: str) -> None:
    with pytest.raises(ValueError, match=r"OCR_STUDY_FAILPOINTS: .*"):
        parse(bad)


def test_conditions_match_the_call_sites_keywords(failpoints: Callable[[str], None]) -> None:
    failpoints("p[stage=seg,epoch>=2]=*return")
    assert not failpoint("p", stage="seg", epoch=1)
    assert not failpoint("p", stage="cam", epoch=3)
    assert not failpoint("p", epoch=3)  # a missing key never matches
    assert not failpoint("q", stage="seg", epoch=3)
    assert failpoint("p", stage="seg", epoch=2) and failpoint("p", stage="seg", epoch=9)
    failpoints("q[epoch=1,done=True]=*return")
    assert failpoint("q", epoch=1.0, done=True)  # numbers compare as numbers: Tune reports epoch 1 as 1.0
    assert not failpoint("q", epoch=1.5, done=True) and not failpoint("q", epoch=1, done=False)


def test_counts_in_one_process(failpoints: Callable[[str], None]) -> None:
    failpoints("once=return; twice=2*return; always=*return")
    assert [failpoint("once") for _ in range(3)] == [True, False, False]
    assert [failpoint("twice") for _ in range(3)] == [True, True, False]
    assert all(failpoint("always") for _ in range(5))


def test_raise_names_the_failpoint(failpoints: Callable[[str], None]) -> None:
    failpoints("here=raise")
    with pytest.raises(FailpointError, match="failpoint here fired"):
        failpoint("here")
    failpoint("here")  # fired once: passes now


def _child(spec: str, folder: Path, code: str = "failpoint('p', epoch=3)") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, FAILPOINTS_ENV: spec, FAILPOINT_DIR_ENV: str(folder)}
    program = f"from record import failpoint\n{code}\nprint('after')"
    return subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60)


def test_kill_ends_the_process_once_across_processes_and_leaves_its_record(tmp_path: Path) -> None:
    first = _child("p[epoch=3]=kill", tmp_path)
    assert first.returncode == -signal.SIGKILL and "after" not in first.stdout
    (record,) = fired(tmp_path, "p")
    assert record["action"] == "kill" and record["context"] == {"epoch": 3} and record["pid"] > 0
    second = _child("p[epoch=3]=kill", tmp_path)  # a retried worker, a resumed driver: not again
    assert second.returncode == 0 and "after" in second.stdout
    assert len(fired(tmp_path)) == 1


def test_exit_and_counted_returns_across_processes(tmp_path: Path) -> None:
    assert _child("p=exit(7)", tmp_path).returncode == 7
    code = "import sys; sys.exit(10 if failpoint('r') else 0)"
    assert [_child("r=2*return", tmp_path, code).returncode for _ in range(3)] == [10, 10, 0]
    assert [r["name"] for r in fired(tmp_path)] == ["p", "r", "r"]


def test_pause_holds_the_process_until_it_is_killed(tmp_path: Path) -> None:
    env = {**os.environ, FAILPOINTS_ENV: "p=pause", FAILPOINT_DIR_ENV: str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", "from record import failpoint\nfailpoint('p')\nprint('after')"],
                            env=env, stdout=subprocess.PIPE, text=True)
    try:
        # The firing is written before the pause: waiting for it waits for an event, not a moment.
        while not fired(tmp_path, "p"):
            assert proc.poll() is None, "the process ended instead of pausing"
            time.sleep(0.01)
        assert proc.poll() is None
    finally:
        proc.kill()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and "after" not in out
