"""A real Prometheus text scrape of Ray's metrics endpoint shows Serve's and zhserve's metrics."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.serve

TASKS = ("ner", "sentiment")


def scrape() -> dict[str, float]:
    import ray

    totals: dict[str, float] = {}
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        text = httpx.get(f"http://127.0.0.1:{node['MetricsExportPort']}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = sample.name + "".join(
                    f"|{k}={v}" for k, v in sorted(sample.labels.items()) if k in ("label", "task")
                )
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def test_prometheus_scrape_has_serve_and_zhserve_metrics(zhserve_url: str) -> None:
    text = "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。服务很贴心，下次还来。"
    for _ in range(3):
        assert httpx.post(f"{zhserve_url}/v1/analyze", json={"text": text}, timeout=60).status_code == 200

    def verdicts(metrics: dict[str, float]) -> float:
        return sum(v for k, v in metrics.items() if k.startswith("ray_zhserve_sentiment_verdicts_total|"))

    def counted(metrics: dict[str, float]) -> bool:
        return (
            metrics.get("ray_zhserve_characters_total|task=ner", 0) >= 3 * len(text)
            and metrics.get("ray_zhserve_entities_total|label=PER", 0) >= 6
            and verdicts(metrics) >= 3
            and all(metrics.get(f"ray_zhserve_model_seconds_per_token|task={task}", 0) > 0 for task in TASKS)
        )

    # Wait for every counter asserted below: entities alone may already be there from earlier
    # NER-only tests, exported before these requests' verdicts are.
    deadline = time.monotonic() + 90
    metrics: dict[str, float] = {}
    while time.monotonic() < deadline:
        metrics = scrape()
        if counted(metrics):
            break
        time.sleep(2)
    assert metrics.get("ray_zhserve_characters_total|task=ner", 0) >= 3 * len(text)
    assert metrics.get("ray_zhserve_entities_total|label=PER", 0) >= 6
    assert verdicts(metrics) >= 3
    # The rate admission judges work by (load and alone, summed here): measured, so above zero.
    for task in TASKS:
        assert metrics.get(f"ray_zhserve_model_seconds_per_token|task={task}", 0) > 0, task
    assert metrics.get("ray_zhserve_replica_resident_bytes", 0) > 10 << 20
    assert any(name.startswith("ray_serve_num_http_requests") for name in metrics)
    assert any(name.startswith("ray_serve_batch") or name.startswith("ray_serve_actual_batch_size") for name in metrics)
