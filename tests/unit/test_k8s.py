"""The KubeRay manifest is valid against the RayService CRD and serves what serve_config.yaml serves."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD = REPO_ROOT.parent / "shared" / "schemas" / "kuberay-rayservice-crd.yaml"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rayservice() -> dict[str, Any]:
    return load(REPO_ROOT / "k8s" / "rayservice.yaml")


def test_rayservice_matches_the_crd_schema(rayservice: dict[str, Any]) -> None:
    if not CRD.is_file():
        pytest.skip(f"KubeRay CRD not found at {CRD}")
    crd = load(CRD)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == rayservice["apiVersion"].split("/")[1])
    assert rayservice["kind"] == crd["spec"]["names"]["kind"]
    jsonschema.validate(rayservice, version["schema"]["openAPIV3Schema"])


def test_serve_config_v2_is_a_valid_serve_config_mirroring_the_local_one(rayservice: dict[str, Any]) -> None:
    cluster = ServeDeploySchema.model_validate(yaml.safe_load(rayservice["spec"]["serveConfigV2"]))
    local = ServeDeploySchema.model_validate(load(REPO_ROOT / "serve_config.yaml"))
    (cluster_app,), (local_app,) = cluster.applications, local.applications
    assert cluster_app.import_path == local_app.import_path == "serve_app.app:build_app"
    assert {d.name for d in cluster_app.deployments} == {d.name for d in local_app.deployments}
    for cluster_dep in cluster_app.deployments:
        local_dep = next(d for d in local_app.deployments if d.name == cluster_dep.name)
        # Batch knobs and limits are the same everywhere; replica counts and CPUs may differ.
        assert cluster_dep.user_config == local_dep.user_config, cluster_dep.name
        assert cluster_dep.max_ongoing_requests == local_dep.max_ongoing_requests
    for dep in cluster_app.deployments + local_app.deployments:
        batch = (dep.user_config or {}).get("max_batch_size")
        if batch is not None:
            assert dep.max_ongoing_requests >= batch, f"{dep.name}: batches could never fill"
    assert Path(cluster_app.args["ner_model"]).is_absolute()
    assert local.http_options.host == "127.0.0.1"  # loopback only on one box


def test_every_pod_runs_serves_fast_path(rayservice: dict[str, Any]) -> None:
    """The fast path is Ray's environment, read when a node starts: head and workers both set it,
    and the image's HAProxy wrapper (which ends HAProxy with its parent) is the binary Serve runs."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in templates:
        (container,) = template["spec"]["containers"]
        env = {item["name"]: item["value"] for item in container["env"]}
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == "/app/bin/zhserve-haproxy"
    dockerfile = (REPO_ROOT / "k8s" / "Dockerfile").read_text(encoding="utf-8")
    assert "RAY_SERVE_HAPROXY_BINARY_PATH=/app/bin/zhserve-haproxy" in dockerfile
    assert yaml.safe_load(rayservice["spec"]["serveConfigV2"])["logging_config"]["enable_access_log"] is False
    assert load(REPO_ROOT / "serve_config.yaml")["logging_config"]["enable_access_log"] is False


def test_pods_run_unprivileged_and_read_the_api_key_from_a_secret(rayservice: dict[str, Any]) -> None:
    """Every pod: non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp, and
    the API key as a file from the zhserve-api-key Secret (never in the serve config)."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in templates:
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        (container,) = spec["containers"]
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]
        env = {item["name"]: item["value"] for item in container["env"]}
        mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        key_dir = mounts["api-key"]["mountPath"]
        assert env["ZHSERVE_API_KEY_FILE"] == f"{key_dir}/api-key" and mounts["api-key"]["readOnly"] is True
        assert volumes["api-key"]["secret"]["secretName"] == "zhserve-api-key"
    assert "api_key" not in rayservice["spec"]["serveConfigV2"]


def test_the_image_is_non_root_and_installs_pinned_serving_dependencies() -> None:
    dockerfile = (REPO_ROOT / "k8s" / "Dockerfile").read_text(encoding="utf-8")
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert "pip install --no-cache-dir -c constraints.txt" in dockerfile
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name] = version
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower()
        assert name in pins, f"{name} is not pinned in constraints.txt"
    assert "torch" not in pins and "modelscope" not in pins  # serving never installs them
