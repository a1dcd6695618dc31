"""Shared fixtures. The Serve fixtures start ONE real local Ray cluster per pytest session
(never local testing mode: the two must not share a process) with HTTP on loopback only.
"""

from __future__ import annotations

import copy
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_NER = REPO_ROOT / "models" / "ner-ensemble"
EMBEDDED_SENTIMENT = REPO_ROOT / "models" / "sentiment-e5"


def embedded_ner() -> Path:
    """The NER model the Serve tests use: the embedded one unless ZHSERVE_TEST_NER_MODEL says otherwise."""
    return Path(os.environ.get("ZHSERVE_TEST_NER_MODEL", EMBEDDED_NER))


def embedded_sentiment() -> Path:
    return Path(os.environ.get("ZHSERVE_TEST_SENTIMENT_MODEL", EMBEDDED_SENTIMENT))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow; run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def require_program(path: Path) -> None:
    """Skip a test whose system program is missing on a developer's machine, but fail it in CI
    (``CI`` set), where the test command installs it: a skip there would hide a broken install."""
    if path.exists():
        return
    message = f"{path} is not installed; run scripts/install-test-deps.sh (make test does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


METRICS_REPORT_INTERVAL_MS = 2000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def own_serve_ports() -> dict[str, str]:
    """Ports Serve's HAProxy mode otherwise fixes (stats 8404, metrics 9101, the fallback proxy
    8500): a second Ray cluster on the machine (`make run`, the multi-node test) needs its own."""
    return {
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
    }


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A fresh local Ray cluster (no dashboard) and Serve with HTTP on 127.0.0.1."""
    import ray
    from ray import serve

    from serve_app.launch import fast_path_environment

    # The cluster runs with the environment `make run` gives it: Serve's fast path and HAProxy.
    environment, notes = fast_path_environment(os.environ, local=True)
    os.environ.update(environment)
    os.environ["ZHSERVE_TEST_HOOKS"] = "1"  # replicas accept the test-only grow() (deployments.server)
    print("\n".join(notes))
    # 4 logical CPUs on a 2-core box: room for a second application (the exported-twin test)
    # beside the main one; Ray CPUs are scheduling units, ONNX threads are set per replica.
    # Metrics reach the nodes' export ports every 2 s (Ray's default is 10 s), so a metrics test
    # can tell when the counters of the tests before it have settled.
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=False,
        _system_config={"metrics_report_interval_ms": METRICS_REPORT_INTERVAL_MS},
    )
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


def serve_http_url() -> str:
    from ray import serve

    options = serve.status().proxies  # ensures the controller answers
    del options
    from ray.serve.context import _get_global_client

    http = _get_global_client().http_config
    return f"http://{http.host}:{http.port}"


def wait_ready(url: str, timeout_s: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/readyz", timeout=10)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout_s} s: {last}")


def zhserve_application(
    *,
    args: dict[str, Any] | None = None,
    user_config: dict[str, dict[str, Any]] | None = None,
    name: str = "zhserve",
    route_prefix: str = "/",
) -> dict[str, Any]:
    """The application block of serve_config.yaml, pointed at the test's models.

    ``user_config`` maps a deployment name to keys merged into its user_config.
    """
    config = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text(encoding="utf-8"))
    (application,) = copy.deepcopy(config["applications"])
    application.update(name=name, route_prefix=route_prefix)
    application["args"].update(
        {"ner_model": str(embedded_ner()), "sentiment_model": str(embedded_sentiment()), **(args or {})}
    )
    for deployment in application["deployments"]:
        deployment["user_config"] = {
            **deployment.get("user_config", {}),
            **(user_config or {}).get(deployment["name"], {}),
        }
    return application


def deploy_applications(*applications: dict[str, Any], wait: bool = True) -> None:
    """Deploy declaratively, as `serve run serve_config.yaml` and `serve deploy` do: a change of
    user_config alone is applied live to running replicas through reconfigure()."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    client = _get_global_client()
    client.deploy_apps(ServeDeploySchema.model_validate({"applications": list(applications)}))
    if wait:
        wait_running([app["name"] for app in applications])


def wait_running(names: list[str], timeout_s: float = 300.0) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        applications = serve.status().applications
        statuses = {name: str(applications[name].status) if name in applications else "MISSING" for name in names}
        if all(status.endswith("RUNNING") for status in statuses.values()):
            return
        if any(status.endswith("DEPLOY_FAILED") for status in statuses.values()):
            raise RuntimeError(f"deploy failed: {serve.status().applications}")
        time.sleep(0.5)
    raise TimeoutError(f"applications not running after {timeout_s} s: {statuses}")


@pytest.fixture(scope="session")
def zhserve_url(ray_cluster: None) -> Iterator[str]:
    """serve_config.yaml's application on the embedded models, over real HTTP on loopback."""
    deploy_applications(zhserve_application())
    url = serve_http_url()
    wait_ready(url)
    yield url
