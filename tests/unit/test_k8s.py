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


def test_the_cluster_config_is_the_local_one_but_for_replica_placement() -> None:
    """serve_config.cluster.yaml (README "Multi-node") differs from serve_config.yaml only where it
    must: at least two replicas of each deployment, at most one per node."""
    local = load(REPO_ROOT / "serve_config.yaml")
    cluster = load(REPO_ROOT / "serve_config.cluster.yaml")
    ServeDeploySchema.model_validate(cluster)
    for deployment in cluster["applications"][0]["deployments"]:
        assert deployment.pop("max_replicas_per_node") == 1, deployment["name"]
        scaling = deployment["autoscaling_config"]
        assert scaling["min_replicas"] >= 2 and scaling["max_replicas"] >= scaling["min_replicas"]
        for key in ("min_replicas", "max_replicas"):
            scaling.pop(key)
    for deployment in local["applications"][0]["deployments"]:
        for key in ("min_replicas", "max_replicas"):
            deployment["autoscaling_config"].pop(key)
    assert cluster == local


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
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for requirement in project["dependencies"]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower())
        assert name in pins, f"{name} is not pinned in constraints.txt"
    assert "torch" not in pins and "modelscope" not in pins  # serving never installs them


def _replica_asks(config: dict[str, Any], which: str) -> tuple[float, list[tuple[str, int, float, int]]]:
    """Total CPU with every deployment at its ``which`` (min/max) replicas, and per deployment
    (name, replicas, CPUs per replica, memory budget MiB per replica)."""
    (application,) = config["applications"]
    total, rows = 0.0, []
    for deployment in application["deployments"]:
        scaling = deployment.get("autoscaling_config")
        replicas = scaling[f"{which}_replicas"] if scaling else deployment.get("num_replicas", 1)
        cpus = deployment["ray_actor_options"]["num_cpus"]
        budget = (deployment.get("user_config") or {}).get("memory_limit_mb", 0)
        total += replicas * cpus
        rows.append((deployment["name"], replicas, cpus, budget))
    return total, rows


def test_the_local_configs_fit_the_machines_they_are_for() -> None:
    """serve_config.yaml at max_replicas fits this 2-core box without overriding Ray's CPU
    count (it scales under load instead of leaving a replica pending); the base-size config fits
    its minimum on a 4-CPU node."""
    local, _ = _replica_asks(load(REPO_ROOT / "serve_config.yaml"), "max")
    assert local <= 2.0 + 1e-9, f"serve_config.yaml asks {local} CPUs at max_replicas"
    base, _ = _replica_asks(load(REPO_ROOT / "serve_config.base.yaml"), "min")
    assert base <= 4.0, f"serve_config.base.yaml asks {base} CPUs at min_replicas"


def _quantity_mib(value: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value) / (1 << 20)


def test_the_rayservice_replicas_fit_the_worker_pods(rayservice: dict[str, Any]) -> None:
    """Every deployment at max_replicas fits the worker group at maxReplicas pods (the head has
    num-cpus 0); one replica fits one pod in CPU, and a pod's model replicas' memory budgets fit
    inside its memory limit; each deployment keeps at least two replicas (two nodes)."""
    serve_config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (group,) = cluster["workerGroupSpecs"]
    (container,) = group["template"]["spec"]["containers"]
    pod_cpu = float(container["resources"]["limits"]["cpu"])
    pod_mib = _quantity_mib(container["resources"]["limits"]["memory"])
    assert container["resources"]["requests"] == container["resources"]["limits"]  # Guaranteed QoS
    total, rows = _replica_asks(serve_config, "max")
    assert total <= group["maxReplicas"] * pod_cpu, f"{total} CPUs at max_replicas > {group['maxReplicas']} pods"
    for name, _, cpus, _ in rows:
        assert cpus <= pod_cpu, name
    # The most model replicas one pod can hold, each at its full budget, stay under the limit
    # (with room for Ray's own processes): the budget, not the kernel, acts first.
    _, minimum = _replica_asks(serve_config, "min")
    assert all(replicas >= 2 for _, replicas, _, _ in minimum), minimum
    model_budgets = sorted((budget for _, _, _, budget in rows if budget), reverse=True)
    fits_per_pod = int(pod_cpu // min(cpus for _, _, cpus, budget in rows if budget))
    assert sum(model_budgets[:1] * fits_per_pod) + 512 <= pod_mib, (model_budgets, pod_mib)
