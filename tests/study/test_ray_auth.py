"""Token authentication defaults of study.ray_auth (no Ray started)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from study import ray_auth


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    token = tmp_path / "state" / "ray_auth_token"
    monkeypatch.setenv(ray_auth.TOKEN_ENV, str(token))
    return token


def test_a_local_study_gets_token_auth_and_a_private_token_file(clean_env: Path) -> None:
    ray_auth.configure(local=True)
    assert os.environ["RAY_AUTH_MODE"] == "token" and os.environ["RAY_AUTH_TOKEN_PATH"] == str(clean_env)
    assert stat.S_IMODE(clean_env.stat().st_mode) == 0o600
    assert stat.S_IMODE(clean_env.parent.stat().st_mode) == 0o700
    token = clean_env.read_text()
    assert len(token) == 64 and int(token, 16) > 0
    ray_auth.configure(local=True)
    assert clean_env.read_text() == token  # per machine: kept across studies


def test_a_token_others_can_read_is_replaced(clean_env: Path) -> None:
    clean_env.parent.mkdir(parents=True)
    clean_env.write_text("leaked")
    clean_env.chmod(0o644)
    ray_auth.ensure_token(clean_env)
    assert clean_env.read_text() != "leaked" and stat.S_IMODE(clean_env.stat().st_mode) == 0o600


def test_the_users_choices_are_kept(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray_auth.configure(local=True)
    assert "RAY_AUTH_TOKEN_PATH" not in os.environ and not clean_env.exists()
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "given")
    ray_auth.configure(local=True)
    assert "RAY_AUTH_TOKEN_PATH" not in os.environ and not clean_env.exists()


def test_a_cluster_study_uses_the_clusters_token(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    with pytest.raises(ray_auth.MissingTokenError, match="RAY_AUTH_TOKEN"):
        ray_auth.configure(local=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "the-clusters")
    ray_auth.configure(local=False)
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert "RAY_AUTH_TOKEN_PATH" not in os.environ and not clean_env.exists()
