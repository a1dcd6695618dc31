"""Start zhserve on a fresh local Ray cluster on loopback, for the benchmark scripts."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT.parent / "shared" / "data"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_service(num_cpus: int = 4) -> Iterator[str]:
    """A local cluster with Serve's HTTP on 127.0.0.1; yields the base URL.

    ``num_cpus`` is Ray's logical CPU count, not a limit: at 4 on a 2-core box, a redeploy (a
    rolling update) can place new replicas beside the old ones instead of waiting forever for
    their logical CPUs (serve_config.yaml asks 0.5 per model replica, up to 2 replicas each).
    """
    import ray
    from ray import serve

    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def deploy(url: str, args: dict[str, Any]) -> None:
    """(Re)deploy the app with builder ``args`` and wait until /readyz answers 200."""
    from ray import serve

    from serve_app.app import build_app

    serve.run(build_app(args), name="zhserve", route_prefix="/")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("service not ready")


def corpus_sentences(limit: int = 20_000) -> tuple[list[str], str]:
    """News and review sentences from ../shared/data, and where they came from."""
    sources = [DATA_DIR / "ner" / "msra_train.jsonl", DATA_DIR / "sentiment" / "chnsenticorp_dev.jsonl"]
    sentences: list[str] = []
    for path in sources:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the benchmarks build documents from the shared corpora")
        with open(path, encoding="utf-8") as handle:
            for index, line in enumerate(handle):
                if index >= limit // len(sources):
                    break
                sentences.append(json.loads(line)["text"])
    return sentences, ", ".join(p.name for p in sources)
