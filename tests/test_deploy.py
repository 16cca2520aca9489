"""The deployment files, validated without a Docker engine or a cluster.

- docker-compose.yml against the Compose Specification JSON schema vendored in
  check-jsonschema (`--builtin-schema vendor.compose-spec`);
- every Kubernetes manifest with kubernetes-validate (OpenAPI schemas of the release, strict:
  unknown fields are errors);
- plus the properties the service relies on (AOF, one bot, no torch in the image, probes);
- the Redis configuration (deploy/redis/: users with passwords, maxmemory + noeviction, RDB
  off) run for real: start.sh starts a redis-server and the bot's and a worker's Redis users
  run a job, the bot's records and an AOF rewrite; what they must not do is refused.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
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
    assert services["redis"]["entrypoint"] == [
        "sh",
        "/etc/redis/start.sh",
        "/etc/redis/redis.conf",
    ]
    assert "./redis:/etc/redis:ro" in services["redis"]["volumes"]
    assert "ports" not in services["redis"]  # reachable on the project network only
    assert services["bot"]["deploy"]["replicas"] == 1
    assert services["worker"]["deploy"]["replicas"] == "${HBSCREEN_WORKERS:-2}"
    assert services["prometheus"]["profiles"] == ["monitoring"]
    for name in ("bot", "worker"):
        s = services[name]
        assert s["env_file"] == [{"path": ".env", "required": False}]
        user = {"bot": "hbscreen-bot", "worker": "hbscreen-worker"}[name]
        password = {"bot": "REDIS_BOT_PASSWORD", "worker": "REDIS_WORKER_PASSWORD"}[name]
        assert s["environment"]["REDIS_URL"] == f"redis://{user}:${{{password}:?}}@redis:6379/0"
        assert s["build"]["dockerfile"] == "deploy/Dockerfile"
        assert s["read_only"] is True
    for name, s in services.items():  # secrets come from .env only; every container bounded
        assert "TELEGRAM_BOT_TOKEN" not in str(s.get("environment", {}))
        limits = s["deploy"]["resources"]["limits"]
        assert limits["memory"] and limits["cpus"], name
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
    assert redis["command"] == ["sh", "/etc/redis/start.sh", "/etc/redis/redis.conf"]
    # the ConfigMap holds exactly the files docker compose mounts
    data = objs[("ConfigMap", "redis-config")]["data"]
    for name in ("redis.conf", "start.sh"):
        assert data[name] == (DEPLOY / "redis" / name).read_text(), name
    for kind, name in (("Deployment", "bot"), ("Deployment", "worker"), ("StatefulSet", "redis")):
        for c in objs[(kind, name)]["spec"]["template"]["spec"]["containers"]:
            assert c["resources"]["limits"]["memory"] and c["resources"]["limits"]["cpu"], name
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
    for name, user in (("bot", "hbscreen-bot"), ("worker", "hbscreen-worker")):
        c = objs[("Deployment", name)]["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in c["env"]}
        assert env["REDIS_URL"]["value"].startswith(f"redis://{user}:$(REDIS_")
        names = [e["name"] for e in c["env"]]
        assert names.index("REDIS_URL") > 0  # after the password it expands
    secret = objs[("Secret", "hbscreen-secrets")]["stringData"]
    assert {"HBSCREEN_QUEUE_KEY", "REDIS_BOT_PASSWORD", "REDIS_WORKER_PASSWORD"} <= set(secret)
    kustom = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustom["resources"]) == {p.name for p in MANIFESTS if "example" not in p.name}
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


def test_network_policies_deny_by_default_and_open_redis_to_bot_and_workers_only() -> None:
    objs = _objects()
    deny = objs[("NetworkPolicy", "default-deny")]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    redis = objs[("NetworkPolicy", "redis")]["spec"]
    assert redis["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "redis"}
    (rule,) = redis["ingress"]
    sources = {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in rule["from"]}
    assert sources == {"bot", "worker"} and rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    assert redis["egress"] == []
    worker_out = objs[("NetworkPolicy", "worker")]["spec"]["egress"]
    assert all(p["port"] in (6379, 53) for rule in worker_out for p in rule["ports"])


def redis_conf() -> dict[str, str]:
    out = {}
    for line in (DEPLOY / "redis" / "redis.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition(" ")
            out[key] = value.strip()
    return out


def test_redis_config_keeps_jobs_and_one_copy_on_disk() -> None:
    conf = redis_conf()
    assert conf["appendonly"] == "yes" and conf["save"] == '""'  # AOF only, no RDB
    assert conf["maxmemory-policy"] == "noeviction"
    maxmemory = int(conf["maxmemory"].removesuffix("mb")) * 2**20
    # the queue refuses new images well before Redis would refuse a write: the rest is for
    # results in flight (heatmaps of ~0.1 MB) and the bot's records
    assert Settings().queue_max_mb * 2**20 <= 0.6 * maxmemory
    assert "aclfile" not in conf  # given by start.sh, written to memory


@pytest.fixture
def hardened_redis(tmp_path: Path):
    """redis-server started by deploy/redis/start.sh with deploy/redis/redis.conf."""
    from tests.redis_server import free_port

    port = free_port()
    env = os.environ | {
        "REDIS_BOT_PASSWORD": "b" * 64,
        "REDIS_WORKER_PASSWORD": "w" * 64,
        "REDIS_ACL_FILE": str(tmp_path / "users.acl"),
    }
    cmd = ["sh", str(DEPLOY / "redis" / "start.sh"), str(DEPLOY / "redis" / "redis.conf")]
    cmd += ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    until = time.monotonic() + 10
    import socket

    while time.monotonic() < until:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.redis
async def test_the_deployed_redis_users_run_the_service_and_nothing_more(
    hardened_redis: int,
) -> None:
    import redis.asyncio as aioredis
    from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

    from hbscreen.bot.storage import KeyRing, RedisStore
    from hbscreen.inference.queue.protocol import Job, QueueConfig
    from hbscreen.inference.queue.redis_streams import RedisJobSource, RedisSubmitter
    from hbscreen.inference.worker import serve
    from tests.redis_server import noop_process, sealer_for_tests

    port = hardened_redis
    bot_url = f"redis://hbscreen-bot:{'b' * 64}@127.0.0.1:{port}/0"
    worker_url = f"redis://hbscreen-worker:{'w' * 64}@127.0.0.1:{port}/0"
    anonymous = aioredis.Redis(port=port)
    with pytest.raises((AuthenticationError, ResponseError)):  # NOAUTH: default user is off
        await anonymous.ping()
    await anonymous.aclose()

    config = QueueConfig(heartbeat_s=0.2, claim_idle_s=0.5)
    q = RedisSubmitter(bot_url, config, submitter="bot", sealer=sealer_for_tests())
    w = RedisJobSource(worker_url, config, sealer=sealer_for_tests())
    store = RedisStore(bot_url, prefix="hbscreen:bot:", sealer=KeyRing(b"k").records)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(w, noop_process, stop=stop, block_s=0.1))
    try:
        jid = await q.submit(b"photo", Job(group="woman"))
        assert (await q.wait(jid, 10)).status == "done"  # submit, take, finish, outcomes
        await store.update_profile("p", lang="sw")
        await store.add_record("p", {"hb": 12.0})
        await store.delete_person("p")
        assert await store.compact() is True  # the bot may rewrite the AOF
        info = await store.r.info("memory")
        assert info["maxmemory_policy"] == "noeviction" and info["maxmemory"] == 768 * 2**20
        # a worker reaches the queue, not the bot's records, and neither runs admin commands
        with pytest.raises(NoPermissionError):
            await w.r.get("hbscreen:bot:person:p")
        for client in (w.r, store.r):
            with pytest.raises(NoPermissionError):
                await client.flushall()
            with pytest.raises(NoPermissionError):
                await client.config_get("save")
        with pytest.raises(NoPermissionError):
            await w.r.bgrewriteaof()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await w.close()
        await q.close()
        await store.close()
