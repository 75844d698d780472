"""deploy/: no cluster runs here, so check what can be checked: every file parses, and everything it
names (modules, settings, files, services, ports) exists in this repository."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import tomllib

import pytest
import yaml

from assets_pkg.domain.store import BM25_SINCE

from assets_pkg.assets import clip_embeddings
from assets_pkg.k8s import GPU_POD
from assets_pkg.domain.settings import DEFAULTS
from conftest import ROOT

DEPLOY = ROOT / "deploy"
PG_VARS = set(re.findall(r"env: (DAGSTER_PG_\w+)", (ROOT / "orchestration" / "dagster-postgres.yaml").read_text()))
KNOWN_VARS = set(DEFAULTS) | PG_VARS | {"DAGSTER_EXECUTOR", "DAGSTER_HOME", "GOOGLE_GENAI_USE_VERTEXAI"}
# Read by s3fs (botocore) itself for DROPS_DIR / ARTIFACTS_DIR in a bucket.
AWS_VARS = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}


def load(path):
    return yaml.safe_load((DEPLOY / path).read_text())


@pytest.mark.parametrize("path", sorted(p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*.yaml")))
def test_every_yaml_file_parses(path):
    assert isinstance(load(path), dict)


def test_compose_builds_the_shipped_code_and_wires_every_service_to_it():
    compose = load("docker-compose.yaml")
    services = compose["services"]
    assert {"postgres", "etcd", "minio", "milvus", "code", "webserver", "daemon"} <= set(services)
    # The image is built from this repo with deploy/Dockerfile; every COPY source exists.
    build = services["code"]["build"]
    dockerfile = (DEPLOY / build["context"] / build["dockerfile"]).resolve()
    assert dockerfile == DEPLOY / "Dockerfile"
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    # The code server serves orchestration.definitions on the port the workspace points at.
    cmd = " ".join(yaml.safe_load(dockerfile.read_text().split("CMD", 1)[1]))
    module = re.search(r"-m (\S+)", cmd).group(1)
    assert hasattr(importlib.import_module(module), "defs")
    grpc = load("workspace.yaml")["load_from"][0]["grpc_server"]
    assert grpc["host"] == "code" and f"-p {grpc['port']}" in cmd
    # Every service that opens the instance gets the PostgreSQL connection the config reads.
    for name in ("code", "webserver", "daemon"):
        assert PG_VARS <= set(services[name]["environment"]), name
    assert services["code"]["environment"]["DROP_STUDIO_MILVUS_URI"] == "http://milvus:19530"
    for name in ("webserver", "daemon"):
        assert services[name]["image"] == services["code"]["image"]
        assert "/opt/dagster/workspace.yaml" in services[name]["command"]


def test_compose_and_helm_name_only_real_settings_and_keep_secrets_out():
    text = (DEPLOY / "docker-compose.yaml").read_text()
    compose = load("docker-compose.yaml")
    env_names = set(compose["services"]["code"]["environment"])
    assert env_names <= KNOWN_VARS | AWS_VARS, env_names - KNOWN_VARS - AWS_VARS
    # Secrets come from deploy/.env (git-ignored), never written into the file.
    assert re.search(r"MILVUS_TOKEN: \$\{MILVUS_TOKEN:\?", text)
    assert re.search(r"DAGSTER_PG_PASSWORD: \$\{DAGSTER_PG_PASSWORD:\?", text)
    assert "deploy/.env" in (ROOT / ".gitignore").read_text().splitlines()
    example = dict(ln.split("=", 1) for ln in (DEPLOY / ".env.example").read_text().splitlines()
                   if ln and not ln.startswith("#"))
    assert set(example) <= KNOWN_VARS and example["DAGSTER_PG_PASSWORD"] == "" and example["GEMINI_API_KEY"] == ""

    values = load("helm/dagster-values.yaml")
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    env = {e["name"]: e.get("value") for e in deployment["env"]}
    assert set(env) <= KNOWN_VARS | AWS_VARS, set(env) - KNOWN_VARS - AWS_VARS
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env)  # from the Secret or the pod's role
    assert not {"MILVUS_TOKEN", "GEMINI_API_KEY", "DAGSTER_PG_PASSWORD"} & set(env)  # from the Secret
    assert deployment["envSecrets"] == [{"name": "drop-studio-secrets"}]
    assert env["DROP_STUDIO_MILVUS_URI"].startswith("http://milvus-proxy.")


def test_compose_and_helm_keep_drops_and_artifacts_in_a_bucket_not_a_shared_volume():
    from assets_pkg.domain.storage import is_remote, location

    compose = load("docker-compose.yaml")
    services = compose["services"]
    code_env = services["code"]["environment"]
    text = (DEPLOY / "docker-compose.yaml").read_text()
    values = load("helm/dagster-values.yaml")
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    helm_env = {e["name"]: e.get("value") for e in deployment["env"]}
    for env in (code_env, helm_env):
        for name in ("DROPS_DIR", "ARTIFACTS_DIR"):
            url = re.sub(r"\$\{\w+:-(.*)\}", r"\1", env[name])  # compose's default
            assert is_remote(location(name, url)), (name, url)
    # No step pod or container mounts a volume for drops or artifacts (ReadWriteMany is not needed).
    assert "volumes" not in services["code"]
    assert "persistentVolumeClaim" not in (DEPLOY / "helm" / "dagster-values.yaml").read_text()
    # Compose's MinIO serves the bucket the code location is pointed at, and creates it first.
    bucket = re.sub(r"\$\{\w+:-(.*)\}", r"\1", code_env["DROPS_DIR"]).split("/")[2]
    assert f"local/{bucket}" in " ".join(services["buckets"]["entrypoint"])
    assert services["code"]["depends_on"]["buckets"] == {"condition": "service_completed_successfully"}
    assert code_env["AWS_ENDPOINT_URL"].endswith("http://minio:9000}")
    assert re.search(r"AWS_SECRET_ACCESS_KEY: \$\{MINIO_SECRET_KEY", text)  # a variable, not a literal key


def test_helm_values_run_steps_as_pods_and_only_embedding_on_a_gpu_node():
    values = load("helm/dagster-values.yaml")
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    module = args[args.index("-m") + 1]
    assert hasattr(importlib.import_module(module), "defs")
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert {"name": "DAGSTER_EXECUTOR", "value": "k8s"} in deployment["env"]
    # DAGSTER_EXECUTOR=k8s switches the Definitions to dagster-k8s's k8s_job_executor (the `k8s` extra):
    # the definitions load that way and every job a sensor, schedule or click launches runs a pod per step.
    proc = subprocess.run(
        [sys.executable, "-c", "from orchestration.definitions import defs\n"
         "print(sorted({defs.resolve_job_def(j.name).executor_def.name for j in defs.resolve_all_job_defs()}))"],
        cwd=ROOT, env={**os.environ, "DAGSTER_EXECUTOR": "k8s"}, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["['k8s']"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("dagster-k8s") for r in extras["k8s"])
    assert "[k8s]" in (DEPLOY / "Dockerfile").read_text()
    # The GPU request rides on the embedding step only.
    from assets_pkg.assets import drop_assets

    tagged = {a.key.path[-1] for a in drop_assets if "dagster-k8s/config" in (a.op.tags or {})}
    assert tagged == {"clip_embeddings"}
    assert json.loads(clip_embeddings.op.tags["dagster-k8s/config"]) == GPU_POD  # Dagster stores it as JSON
    assert GPU_POD["container_config"]["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert values["concurrency"]["pools"]["defaultLimit"] >= 1


def test_milvus_helm_values_are_a_cluster_with_authentication():
    values = load("helm/milvus-values.yaml")
    assert values["cluster"]["enabled"] is True
    user = yaml.safe_load(values["extraConfigFiles"]["user.yaml"])
    assert user["common"]["security"]["authorizationEnabled"] is True
    assert values["queryNode"]["replicas"] >= 2 and values["etcd"]["replicaCount"] == 3


def _version(tag: str) -> tuple[int, int]:
    major, minor = tag.removeprefix("v").split(".")[:2]
    return int(major), int(minor)


def test_both_deployments_pin_a_milvus_with_bm25_full_text_search():
    compose = load("docker-compose.yaml")["services"]["milvus"]["image"]
    helm = load("helm/milvus-values.yaml")["image"]["all"]
    assert compose.startswith("milvusdb/milvus:") and helm["repository"] == "milvusdb/milvus"
    assert _version(compose.split(":")[1]) >= BM25_SINCE and helm["tag"] == compose.split(":")[1]
