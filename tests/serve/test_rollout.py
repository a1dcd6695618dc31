"""A model rollout under load (README "Upgrades"): the application redeployed declaratively, as
`serve deploy` does, with a new model directory (the same model, its manifest's version bumped).
Serve replaces the replicas one at a time, each stopped gracefully after its requests; no request
fails and /v1/models reports the new version when it is done."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.runtime.model_dir import ModelDir, write_manifest
from tests.conftest import deploy_applications, wait_ready, zhserve_application
from tests.support.load import Load
from tests.support.tiny_models import build_tiny_ner, build_tiny_sentiment

pytestmark = pytest.mark.serve


def bumped(source: Path, target: Path, version: str) -> Path:
    """A copy of a model directory whose manifest names a new version (a release of a model)."""
    shutil.copytree(source, target)
    manifest = ModelDir.load(target).manifest
    write_manifest(target, manifest.model_copy(update={"version": version}))
    return target


def ner_version(url: str) -> str:
    models = httpx.get(f"{url}/v1/models", timeout=10).json()["models"]
    return str(next(model["version"] for model in models if model["task"] == "ner"))


def test_a_model_rollout_under_load_fails_no_request(zhserve_url: str, tmp_path: Path) -> None:
    ner_v1 = build_tiny_ner(tmp_path / "ner-v1", {"马云": "PER", "杭州": "LOC", "阿里巴巴": "ORG"})
    ner_v2 = bumped(ner_v1, tmp_path / "ner-v2", "0.0.2")
    sentiment = build_tiny_sentiment(tmp_path / "sentiment", positive="好", negative="差")

    def rollout_app(ner: Path) -> dict[str, Any]:
        return zhserve_application(
            name="rollout", route_prefix="/rollout", args={"ner_model": str(ner), "sentiment_model": str(sentiment)}
        )

    # Every deploy names every application: a declarative deploy removes the ones it omits.
    deploy_applications(zhserve_application(), rollout_app(ner_v1))
    url = f"{zhserve_url}/rollout"
    try:
        wait_ready(url)
        assert ner_version(url) == "0.0.1"
        payloads = [{"text": "马云在杭州创办了阿里巴巴，服务很好。" * n} for n in (1, 3, 10, 30)]
        with Load(url, "/v1/analyze", payloads, timeout_s=60) as load:
            time.sleep(3)
            rolled_at = time.monotonic()
            deploy_applications(zhserve_application(), rollout_app(ner_v2), wait=False)
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                try:
                    if ner_version(url) == "0.0.2":
                        break
                except (httpx.HTTPError, ValueError, KeyError):
                    pass  # an answer that is not the models list fails the load's check, not this poll
                time.sleep(0.5)
            else:
                pytest.fail("/v1/models did not report 0.0.2 within 180 s")
            done_at = time.monotonic()
            time.sleep(3)  # the new replicas under load for a moment
        load.check_clients()
        during = load.during(rolled_at, done_at)
        failed = [(a.status, a.error or a.body) for a in load.failures()]
        print(
            f"rollout under 4 clients: {len(load.answers)} requests, {len(during)} sent during the "
            f"{done_at - rolled_at:.1f} s rollout, {len(failed)} failed"
        )
        assert during, "no request was sent during the rollout"
        assert not failed, failed[:5]
        models = [a.body["ner"]["model"] for a in load.answers if a.status == 200]
        assert models[-1].endswith("@0.0.2") and any(m.endswith("@0.0.1") for m in models)
    finally:
        deploy_applications(zhserve_application())
