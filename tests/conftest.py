"""Shared fixtures. The Serve fixtures start ONE real local Ray cluster per pytest session
(never local testing mode: the two must not share a process) with HTTP on loopback only.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_NER = REPO_ROOT / "models" / "ner"
EMBEDDED_SENTIMENT = REPO_ROOT / "models" / "sentiment"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow; run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A fresh local Ray cluster (no dashboard) and Serve with HTTP on 127.0.0.1."""
    import ray
    from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # 4 logical CPUs on a 2-core box: room for a second application (the exported-twin test)
    # beside the main one; Ray CPUs are scheduling units, ONNX threads are set per replica.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
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


@pytest.fixture(scope="session")
def zhserve_url(ray_cluster: None) -> Iterator[str]:
    """The zhserve application on the embedded models, served over real HTTP on loopback."""
    from ray import serve

    from serve_app.app import build_app

    app = build_app({"ner_model": str(EMBEDDED_NER), "sentiment_model": str(EMBEDDED_SENTIMENT)})
    serve.run(app, name="zhserve", route_prefix="/", blocking=False)
    url = serve_http_url()
    wait_ready(url)
    yield url
    serve.delete("zhserve")
