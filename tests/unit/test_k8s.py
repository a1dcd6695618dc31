"""The Kubernetes files would come up on a real KubeRay cluster, as far as a machine without one
can tell: strictly valid (unknown fields are errors) against the KubeRay CRD and Kubernetes' own
schemas; every replica placed on a worker pod at minimum and maximum replicas; the autoscaler able
to act; requests drained before a pod goes; the image holding what the RayService serves."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from scripts import placement
from serve_app.launch import HAPROXY_RETRY_ON, HAPROXY_TIMEOUT_SERVER_S

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = REPO_ROOT.parent / "shared" / "schemas"
RAY_PACKAGE = Path(ray_module_file).parent if (ray_module_file := __import__("ray").__file__) else None


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


@pytest.fixture(scope="module")
def rayservice() -> dict[str, Any]:
    return load(REPO_ROOT / "k8s" / "rayservice.yaml")


@pytest.fixture(scope="module")
def serve_config(rayservice: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


def pod_templates(rayservice: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]


def deployments(serve_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (application,) = serve_config["applications"]
    return {d["name"]: d for d in application["deployments"]}


# ---------------------------------------------------------------- strict schema validation


def refuse_unknown_fields(schema: Any) -> Any:
    """A copy of an OpenAPI v3 schema in which every object with declared properties refuses any
    other (the API server prunes unknown fields silently; here they are errors)."""
    if isinstance(schema, list):
        return [refuse_unknown_fields(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: refuse_unknown_fields(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


def crd_validator(name: str, api_version: str) -> jsonschema.protocols.Validator:
    path = SCHEMAS / f"kuberay-{name}-crd.yaml"
    if not path.is_file():
        pytest.skip(f"KubeRay CRD not found at {path}")
    crd = load(path)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == api_version.split("/")[1])
    schema = refuse_unknown_fields(version["schema"]["openAPIV3Schema"])
    return jsonschema.Draft202012Validator(schema)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: what kustomize does with a patch of a custom resource."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def gcs_ft_rayservice(rayservice: dict[str, Any]) -> dict[str, Any]:
    overlay = REPO_ROOT / "k8s" / "overlays" / "gcs-ft"
    kustomization = load(overlay / "kustomization.yaml")
    assert kustomization["resources"] == ["../../"]
    (patch,) = kustomization["patches"]
    assert patch["target"]["kind"] == "RayService" and patch["target"]["name"] == rayservice["metadata"]["name"]
    return merge_patch(rayservice, load(overlay / patch["path"]))


def test_rayservice_matches_the_crd_schema_with_unknown_fields_refused(rayservice: dict[str, Any]) -> None:
    validator = crd_validator("rayservice", rayservice["apiVersion"])
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(rayservice)]
    assert not errors, errors
    # and the strictness is real: a misspelt field is an error, not silently dropped
    misspelt = copy.deepcopy(rayservice)
    misspelt["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParam"] = {}
    assert not validator.is_valid(misspelt)


def test_the_gcs_fault_tolerance_overlay_is_valid_and_keeps_state_in_redis(rayservice: dict[str, Any]) -> None:
    merged = gcs_ft_rayservice(rayservice)
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in crd_validator("rayservice", "ray.io/v1").iter_errors(merged)
    ]
    assert not errors, errors
    options = merged["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert options["redisAddress"] and options["redisPassword"]["valueFrom"]["secretKeyRef"]["name"]
    assert "gcsFaultToleranceOptions" not in rayservice["spec"]["rayClusterConfig"]  # optional: off by default
    assert load(REPO_ROOT / "k8s" / "kustomization.yaml")["resources"] == ["rayservice.yaml", "pdb.yaml"]


def test_core_kinds_are_valid_kubernetes_with_unknown_fields_refused() -> None:
    version = kubernetes_validate.latest_version()
    for name in ("pdb.yaml",):
        for resource in load_all(REPO_ROOT / "k8s" / name):
            kubernetes_validate.validate(resource, version, strict=True)
    # the RayService's pod templates, as the Pods KubeRay makes of them
    for template in pod_templates(load(REPO_ROOT / "k8s" / "rayservice.yaml")):
        metadata = {"name": "zhserve-pod", **template["metadata"]}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
        kubernetes_validate.validate(pod, version, strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        bad = load(REPO_ROOT / "k8s" / "pdb.yaml")
        bad["spec"]["maxUnavailabe"] = 1
        kubernetes_validate.validate(bad, version, strict=True)


def test_no_deprecated_fields_and_an_explicit_upgrade_strategy(rayservice: dict[str, Any]) -> None:
    spec = rayservice["spec"]
    assert "serviceUnhealthySecondThreshold" not in spec and "deploymentUnhealthySecondThreshold" not in spec
    assert spec["upgradeStrategy"]["type"] == "NewCluster"
    # the old cluster outlives the longest request after traffic switches to the new one
    proxy_timeout = yaml.safe_load(spec["serveConfigV2"])["http_options"]["request_timeout_s"]
    assert spec["rayClusterDeletionDelaySeconds"] > proxy_timeout


# ---------------------------------------------------------------- the application it serves


def test_serve_config_v2_is_a_valid_serve_config_of_the_local_application(serve_config: dict[str, Any]) -> None:
    cluster = ServeDeploySchema.model_validate(serve_config)
    local = ServeDeploySchema.model_validate(load(REPO_ROOT / "serve_config.yaml"))
    (cluster_app,), (local_app,) = cluster.applications, local.applications
    assert cluster_app.import_path == local_app.import_path == "serve_app.app:build_app"
    assert {d.name for d in cluster_app.deployments} == {d.name for d in local_app.deployments}
    for dep in cluster_app.deployments:
        batch = (dep.user_config or {}).get("max_batch_size")
        if batch is not None:
            assert dep.max_ongoing_requests >= batch, f"{dep.name}: batches could never fill"
    assert Path(cluster_app.args["ner_model"]).is_absolute()
    assert local.http_options.host == "127.0.0.1"  # loopback only on one box


def test_replicas_drain_for_longer_than_the_longest_request(
    rayservice: dict[str, Any], serve_config: dict[str, Any]
) -> None:
    """A replica scaled down or moved finishes what it holds: its graceful_shutdown_timeout_s is
    above the proxy's request timeout (itself above the ingress's), and the pod's grace period
    above that, so Kubernetes never kills a pod before Serve let its requests end."""
    ingress_timeout = deployments(serve_config)["Ingress"]["user_config"]["request_timeout_s"]
    proxy_timeout = serve_config["http_options"]["request_timeout_s"]
    assert proxy_timeout > ingress_timeout
    graceful = [d["graceful_shutdown_timeout_s"] for d in deployments(serve_config).values()]
    assert min(graceful) > proxy_timeout
    for template in pod_templates(rayservice):
        assert template["spec"]["terminationGracePeriodSeconds"] > max(graceful)
    # On SIGTERM Ray drains its node (Serve moves and gracefully stops the replicas) for up to
    # RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S (default 30 s): longer than the replicas' graceful stop,
    # shorter than the pod's grace period.
    from ray._private import ray_constants

    assert hasattr(ray_constants, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S")
    for group in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        drain = float({e["name"]: e["value"] for e in container["env"]}["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"])
        assert max(graceful) < drain < group["template"]["spec"]["terminationGracePeriodSeconds"]


def test_model_replicas_reserve_a_cpu_for_every_thread_they_run(serve_config: dict[str, Any]) -> None:
    (application,) = serve_config["applications"]
    threads = application["args"]["intra_op_threads"] * application["args"].get("row_threads", 1)
    for name in ("NER", "Sentiment"):
        assert deployments(serve_config)[name]["ray_actor_options"]["num_cpus"] >= threads, name


# ---------------------------------------------------------------- placement


def test_every_replica_has_a_pod_at_minimum_and_at_maximum(rayservice: dict[str, Any]) -> None:
    """Bin-pack every deployment's replicas (CPU and memory, one per node where configured, Serve's
    proxy and HAProxy as per-pod overhead) onto the worker group's minReplicas and maxReplicas pods."""
    for which, result in placement.check_rayservice(rayservice, placement.WORKER_OVERHEADS).items():
        assert result.fits, f"at {which} replicas:\n{result.describe()}"
    (group,) = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_every_deployment_survives_a_pod_loss(serve_config: dict[str, Any]) -> None:
    for name, deployment in deployments(serve_config).items():
        assert deployment["max_replicas_per_node"] == 1, name
        assert deployment["autoscaling_config"]["min_replicas"] >= 2, name


def test_worker_pods_are_guaranteed_and_hold_their_replicas_budgets(
    rayservice: dict[str, Any], serve_config: dict[str, Any]
) -> None:
    """Guaranteed QoS (requests = limits), and the enforced memory budgets of the replicas one pod
    can hold (one of each) plus the per-pod overhead stay under the pod's limit: the budget, not the
    kernel's OOM killer, acts first."""
    (group,) = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    (container,) = group["template"]["spec"]["containers"]
    assert container["resources"]["requests"] == container["resources"]["limits"]
    budgets = sum(
        d.get("user_config", {}).get("memory_limit_mb", d["ray_actor_options"].get("memory", 0) // placement.MIB)
        for d in deployments(serve_config).values()
    )
    overhead = sum(o.memory_bytes for o in placement.WORKER_OVERHEADS) // placement.MIB
    assert budgets + overhead <= placement.quantity(container["resources"]["limits"]["memory"]) / placement.MIB


# ---------------------------------------------------------------- pods


def test_only_the_head_mounts_a_token_for_the_autoscaler(rayservice: dict[str, Any]) -> None:
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["template"]["spec"]["automountServiceAccountToken"] is True
    for group in cluster["workerGroupSpecs"]:
        assert group["template"]["spec"]["automountServiceAccountToken"] is False
    autoscaler = cluster["autoscalerOptions"]
    assert autoscaler["resources"]["requests"] == autoscaler["resources"]["limits"]
    context = autoscaler["securityContext"]
    assert context["runAsNonRoot"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]


def test_workers_spread_over_nodes_and_a_pdb_covers_them(rayservice: dict[str, Any]) -> None:
    (group,) = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    labels = group["template"]["metadata"]["labels"]
    spread = group["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname"}
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()
    (pdb,) = load_all(REPO_ROOT / "k8s" / "pdb.yaml")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    head_labels = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["metadata"]["labels"]
    assert not pdb["spec"]["selector"]["matchLabels"].items() <= head_labels.items()  # a drain never waits on the head
    assert pdb["spec"]["maxUnavailable"] == 1


def test_every_pod_runs_serves_fast_path(rayservice: dict[str, Any], serve_config: dict[str, Any]) -> None:
    """The fast path is Ray's environment, read when a node starts: head and workers both set it,
    and the image's HAProxy wrapper (which ends HAProxy with its parent) is the binary Serve runs."""
    for template in pod_templates(rayservice):
        (container,) = template["spec"]["containers"]
        env = {item["name"]: item["value"] for item in container["env"]}
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == "/app/bin/zhserve-haproxy"
        assert env["RAY_SERVE_HAPROXY_RETRY_ON"] == HAPROXY_RETRY_ON  # as the launcher sets it
        assert env["RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S"] == HAPROXY_TIMEOUT_SERVER_S
    dockerfile = (REPO_ROOT / "k8s" / "Dockerfile").read_text(encoding="utf-8")
    assert "RAY_SERVE_HAPROXY_BINARY_PATH=/app/bin/zhserve-haproxy" in dockerfile
    assert f'RAY_SERVE_HAPROXY_RETRY_ON="{HAPROXY_RETRY_ON}"' in dockerfile
    assert f"RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S={HAPROXY_TIMEOUT_SERVER_S}" in dockerfile
    assert serve_config["logging_config"]["enable_access_log"] is False
    assert load(REPO_ROOT / "serve_config.yaml")["logging_config"]["enable_access_log"] is False


def test_pods_run_unprivileged_and_read_the_api_key_from_a_secret(rayservice: dict[str, Any]) -> None:
    """Every pod: non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp, and
    the API key as a file from the zhserve-api-key Secret (never in the serve config)."""
    for template in pod_templates(rayservice):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
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


# ---------------------------------------------------------------- the image


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of k8s/Dockerfile, continuation lines joined, comments dropped."""
    text = (REPO_ROOT / "k8s" / "Dockerfile").read_text(encoding="utf-8")
    logical = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for line in logical.splitlines()
        if (parts := line.strip().split(None, 1))
    ]


def test_the_image_copies_exactly_the_models_the_rayservice_serves(serve_config: dict[str, Any]) -> None:
    copied = set()
    for instruction, arguments in dockerfile_instructions():
        if instruction == "COPY":
            sources = [word for word in arguments.split() if not word.startswith("--")][:-1]
            copied |= {source.rstrip("/") for source in sources if source.startswith("models")}
    (application,) = serve_config["applications"]
    served = {str(Path(application["args"][key]).relative_to("/app")) for key in ("ner_model", "sentiment_model")}
    assert copied == served
    assert all((REPO_ROOT / model / "manifest.json").is_file() for model in served)


def test_the_image_installs_dependencies_before_the_code_and_not_editable() -> None:
    instructions = dockerfile_instructions()
    runs = [i for i, (instruction, _) in enumerate(instructions) if instruction == "RUN"]
    code_copies = [
        i
        for i, (instruction, arguments) in enumerate(instructions)
        if instruction == "COPY" and "serve_app" in arguments
    ]
    dependencies = next(i for i in runs if "pip install --no-cache-dir -r constraints.txt" in instructions[i][1])
    (constraints_copy,) = [
        i for i, (ins, args) in enumerate(instructions) if ins == "COPY" and "constraints.txt" in args
    ]
    assert constraints_copy < dependencies < min(code_copies), "dependencies must be their own layer, before the code"
    assert all(" -e " not in f" {args} " and "--editable" not in args for _, args in instructions)
    install = next(args for _, args in instructions if "--no-deps" in args)
    assert "pip install" in install and "-c constraints.txt" in install


def test_the_image_is_non_root_and_installs_pinned_serving_dependencies() -> None:
    users = [arguments for instruction, arguments in dockerfile_instructions() if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
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


# ---------------------------------------------------------------- monitoring


def test_the_podmonitors_are_found_by_kube_prometheus_stack_and_scrape_the_head(rayservice: dict[str, Any]) -> None:
    monitors = load_all(REPO_ROOT / "k8s" / "podmonitor.yaml")
    head_template = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    head_ports = {port["name"]: port["containerPort"] for port in head_template["spec"]["containers"][0]["ports"]}
    scraped_on_head = set()
    for monitor in monitors:
        assert monitor["kind"] == "PodMonitor"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        selector = monitor["spec"]["selector"]["matchLabels"]
        if selector.items() <= head_template["metadata"]["labels"].items():
            scraped_on_head |= {endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]}
    assert {head_ports[name] for name in scraped_on_head} >= {8080, 44217, 44227}  # Ray, autoscaler, dashboard


def alert_rules() -> list[dict[str, Any]]:
    (rules,) = load_all(REPO_ROOT / "k8s" / "prometheus-rules.yaml")
    return [rule for group in rules["spec"]["groups"] for rule in group["rules"]]


def test_alert_aggregations_keep_namespaces_apart() -> None:
    for rule in alert_rules():
        for grouping in re.findall(r"\b(?:sum|max|min|avg|count)\s*(?:by\s*\(([^)]*)\))?\s*\(", rule["expr"]):
            labels = {label.strip() for label in grouping.split(",")}
            assert "namespace" in labels, f"{rule['alert']}: an aggregation without by (namespace, ...)"


def test_an_alert_fires_when_serve_wants_more_replicas_than_run() -> None:
    """The unplaced-replica alert uses metrics Ray 2.60's Serve controller really exports."""
    (rule,) = [rule for rule in alert_rules() if rule["alert"] == "ZhserveReplicaNotPlaced"]
    names = set(re.findall(r"\bray_(serve_[a-z_]+)\b", rule["expr"]))
    assert names == {"serve_autoscaling_target_replicas", "serve_deployment_replica_healthy"}
    assert RAY_PACKAGE is not None
    source = (RAY_PACKAGE / "serve" / "_private" / "deployment_state.py").read_text(encoding="utf-8")
    for name in names:
        assert f'"{name}"' in source, f"Ray's Serve has no metric {name}"
