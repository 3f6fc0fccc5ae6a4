"""Links from the report to each trial's MLflow run: on an MLflow server only, found by the trial-id tag."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from results import Dataset, RunLinks, is_server, run_links, write_report
from results import _links as links_module

SERVER = "http://mlflow.test:5000/"


def _store(tmp_path: Path, trial_ids: list[str]) -> tuple[str, str, dict[str, str]]:
    """A SQLite MLflow store holding an experiment with a parent run and one run per trial id."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("linked")
    client.create_run(experiment, tags={"ocr_study.role": "study"})  # the parent: not a trial
    runs = {t: client.create_run(experiment, tags={"ocr_study.trial_id": t}).info.run_id for t in trial_ids}
    return uri, str(experiment), runs


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, synthetic: Dataset) -> tuple[str, str, dict[str, str]]:
    """The synthetic study's runs in one SQLite store per module (making MLflow's schema takes seconds)."""
    ids = [str(t) for t in synthetic.trials["trial_id"]]
    return _store(tmp_path_factory.mktemp("mlflow"), ids[:-1])  # the last trial never reached MLflow


@pytest.fixture()
def served(store: tuple[str, str, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, str]]:
    """The synthetic study's runs, read through a client that stands in for the server at ``SERVER``."""
    from mlflow.tracking import MlflowClient

    uri, experiment, runs = store

    def client(tracking_uri: str) -> Any:
        assert tracking_uri == SERVER.rstrip("/")
        return MlflowClient(tracking_uri=uri)

    monkeypatch.setattr(links_module, "mlflow_client", client)
    monkeypatch.setattr(links_module, "_answers", lambda server: None)  # as if its /health answered
    return experiment, runs


@pytest.mark.parametrize(("uri", "server"), [("http://h:5000", True), ("https://mlflow.example.org/", True),
                                             ("sqlite:///x/mlflow.db", False), ("file:///x/mlruns", False),
                                             ("/x/mlruns", False), (None, False)])
def test_only_a_server_uri_gets_links(uri: str | None, server: bool) -> None:
    assert is_server(uri) is server


def test_a_sqlite_or_file_store_gets_no_links_and_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(links_module, "mlflow_client", lambda uri: pytest.fail(f"read {uri}"))
    assert run_links("sqlite:///tmp/none.db", "linked") is None
    assert run_links("file:///tmp/mlruns", "linked") is None


@pytest.mark.slow
def test_each_trial_links_to_its_run_on_the_server(served: tuple[str, dict[str, str]]) -> None:
    experiment, runs = served
    found = run_links(SERVER, "linked")
    assert found is not None
    assert found.experiment_url == f"http://mlflow.test:5000/#/experiments/{experiment}/runs"
    assert dict(found.runs) == {t: f"http://mlflow.test:5000/#/experiments/{experiment}/runs/{r}"
                                for t, r in runs.items()}
    assert run_links(SERVER, "unknown experiment") is None


@pytest.mark.slow
def test_the_html_and_markdown_reports_link_every_run(served: tuple[str, dict[str, str]], synthetic: Dataset,
                                                     tmp_path: Path) -> None:
    experiment, runs = served
    found = run_links(SERVER, "linked")
    written = write_report(synthetic, tmp_path / "report", formats=("html", "md", "tex"), links=found)
    page = written["html"].read_text()
    base = f"http://mlflow.test:5000/#/experiments/{experiment}"
    assert f'<a href="{base}/runs">The study\'s runs in MLflow</a>' in page
    for trial, run in runs.items():
        assert re.search(f'<td class="[^"]*" ><a href="{re.escape(base)}/runs/{run}">{trial}</a></td>', page)
        assert f"[{trial}]({base}/runs/{run})" in written["md"].read_text()
    unlinked = str(synthetic.trials["trial_id"].iloc[-1])
    assert re.search(f'<td class="[^"]*" >{unlinked}</td>', page)  # listed, without a link: MLflow has no run
    assert len(re.findall(r'<a href="(?!plots/)', page)) == len(runs) + 1  # besides each figure's PDF
    assert "mlflow.test" not in written["tex"].read_text()  # the paper's tables carry no links


def test_an_unreachable_server_leaves_the_report_without_links_at_once(monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listens on the port: no links and a warning, without MLflow's minutes of retries (no MLflow
    client is made: the health check alone decides)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed
    monkeypatch.setattr(links_module, "mlflow_client", lambda uri: pytest.fail("no client for a dead server"))
    assert run_links(f"http://127.0.0.1:{port}", "linked") is None
    assert "no links to MLflow runs" in caplog.text


def test_links_must_point_at_a_server() -> None:
    with pytest.raises(ValueError, match="http"):
        RunLinks("sqlite:///x.db")


@pytest.mark.slow
def test_the_report_command_links_the_runs_of_a_study_tracked_on_a_server(
        served: tuple[str, dict[str, str]], store: tuple[str, str, dict[str, str]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from study.cli import main
    from study.spec import load_spec
    from tests.results.conftest import make_study

    folder = make_study(tmp_path / "studies", name="linked")
    saved = {"name": "linked", "storage": str(tmp_path / "studies"), "tracking": {"uri": SERVER}}
    (folder / "spec.yaml").write_text(yaml.safe_dump(load_spec(saved).to_dict()))  # as the study saved it
    assert main(["report", "linked", "--storage", str(tmp_path / "studies"), "--format", "html"]) == 0
    page = (folder / "report" / "report.html").read_text()
    experiment, runs = served
    assert f'/#/experiments/{experiment}/runs/{next(iter(runs.values()))}"' in page
    saved["tracking"] = {"uri": store[0]}  # a SQLite store: no server, no links
    (folder / "spec.yaml").write_text(yaml.safe_dump(load_spec(saved).to_dict()))
    assert main(["report", "linked", "--storage", str(tmp_path / "studies"), "--format", "html"]) == 0
    assert not re.search(r'<a href="(?!plots/)', (folder / "report" / "report.html").read_text())  # but PDFs
