"""The deployment files, validated without a Docker engine or a cluster.

- docker-compose.yml against the Compose Specification JSON schema vendored in
  check-jsonschema (`--builtin-schema vendor.compose-spec`);
- every Kubernetes manifest with kubernetes-validate (OpenAPI schemas of the release, strict:
  unknown fields are errors);
- plus the properties the service relies on (AOF, one bot, no torch in the image, probes).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from hbscreen.settings import Settings

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
K8S_VERSION = "1.30.0"  # the oldest release still supported when this was written


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
    return subprocess.run([*cmd, str(path)], capture_output=True, text=True, timeout=60)


def test_compose_file_matches_the_compose_spec_schema() -> None:
    res = check_compose_schema(DEPLOY / "docker-compose.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_schema_check_catches_a_broken_compose_file(tmp_path: Path) -> None:
    bad = compose()
    bad["services"]["worker"]["deploy"]["replicas"] = {"many": True}
    bad["services"]["bot"]["restart_policy"] = "always"  # not a service key
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(bad))
    assert check_compose_schema(path).returncode != 0


def test_compose_runs_redis_with_aof_one_bot_n_workers_optional_prometheus() -> None:
    c = compose()
    services = c["services"]
    assert set(services) == {"redis", "bot", "worker", "prometheus"}
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert services["bot"]["deploy"]["replicas"] == 1
    assert services["worker"]["deploy"]["replicas"] == "${HBSCREEN_WORKERS:-2}"
    assert services["prometheus"]["profiles"] == ["monitoring"]
    for name in ("bot", "worker"):
        s = services[name]
        assert s["env_file"] == [{"path": ".env", "required": False}]
        assert s["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert s["build"]["dockerfile"] == "deploy/Dockerfile"
        assert s["read_only"] is True
    for s in services.values():  # secrets come from .env only
        assert "TELEGRAM_BOT_TOKEN" not in str(s.get("environment", {}))
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    sd = prom["scrape_configs"][0]["dns_sd_configs"][0]
    assert sd["names"] == ["worker"] and sd["port"] == Settings().metrics_port


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifests_validate_strictly(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_catches_a_broken_manifest() -> None:
    deployment = next(yaml.safe_load_all((K8S / "worker.yaml").read_text()))
    deployment["spec"]["replica"] = 2  # typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def _objects() -> dict[tuple[str, str], dict]:
    out = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def test_kubernetes_layout() -> None:
    objs = _objects()
    bot = objs[("Deployment", "bot")]
    assert bot["spec"]["replicas"] == 1 and bot["spec"]["strategy"]["type"] == "Recreate"
    container = bot["spec"]["template"]["spec"]["containers"][0]
    port = container["ports"][0]["containerPort"]
    assert port == Settings().listen_port
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    refs = [next(iter(r.values()))["name"] for r in container["envFrom"]]
    assert refs == ["hbscreen-config", "hbscreen-secrets"]  # the Secret wins on REDIS_URL
    assert objs[("Secret", "hbscreen-secrets")]["stringData"]["TELEGRAM_BOT_TOKEN"]
    hpa = objs[("HorizontalPodAutoscaler", "worker")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "worker"
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"] >= 1
    worker = objs[("Deployment", "worker")]["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] > Settings().shutdown_grace_s
    redis = objs[("StatefulSet", "redis")]["spec"]["template"]["spec"]["containers"][0]
    assert redis["args"][1:3] == ["--appendonly", "yes"]
    kustom = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustom["resources"]) <= {p.name for p in MANIFESTS}
    # every env key the manifests set is a setting the code reads
    names = set(Settings.model_fields)
    config = objs[("ConfigMap", "hbscreen-config")]["data"]
    for key in config:
        field = key.removeprefix("HBSCREEN_").lower()
        assert field in names, key


def test_runtime_image_has_no_torch_and_runs_as_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]
    froms = [line for line in lines if line.startswith("FROM")]
    assert froms and all("-slim" in line for line in froms)
    assert any("pip install ." in line and "[" not in line for line in lines)
    assert "torch" not in " ".join(line for line in lines if "pip install" in line)
    users = [line for line in lines if line.startswith("USER")]
    assert users and users[-1] != "USER root" and "0" not in users[-1].split()[1].split(":")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in deps if d.lower().startswith(("torch", "torchvision"))]
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    assert ignore.splitlines()[1] == "**"  # only what the image needs enters the context
