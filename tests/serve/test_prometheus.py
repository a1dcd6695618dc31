"""A real Prometheus server scrapes the test cluster and evaluates every query of the Grafana
dashboard (k8s/grafana/zhserve-dashboard.json) and every alert of k8s/prometheus-rules.yaml, so a
renamed metric or a wrong label breaks a test instead of a user's dashboard."""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import METRICS_REPORT_INTERVAL_MS, REPO_ROOT, free_port, require_program

pytestmark = pytest.mark.serve

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
DASHBOARD = REPO_ROOT / "k8s" / "grafana" / "zhserve-dashboard.json"
RULES = REPO_ROOT / "k8s" / "prometheus-rules.yaml"
NEWS = "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。"
REVIEW = "服务很贴心，下次还来。"


def rule_groups() -> dict[str, Any]:
    """The PrometheusRule's groups as a plain Prometheus rules file."""
    return {"groups": yaml.safe_load(RULES.read_text(encoding="utf-8"))["spec"]["groups"]}


def rule_groups_fast() -> dict[str, Any]:
    """The same rules with every ``for`` at 1 s, so that a test sees an alert fire in seconds."""
    groups = rule_groups()
    for group in groups["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    return groups


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, with the dashboard's variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        (panel["title"], target["expr"].replace("$application", "zhserve").replace("$__rate_interval", "30s"))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", f"{expr}: {body.get('error')}"
    return body["data"]["result"]  # type: ignore[no-any-return]


def values(result: list[dict[str, Any]]) -> list[float]:
    return [float(series["value"][1]) for series in result]


@pytest.fixture(scope="module")
def prometheus(zhserve_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus on loopback scraping every Ray node's metrics port each second, with the alerts loaded
    (their ``for`` durations shortened to 1 s)."""
    import ray

    require_program(PROMETHEUS)
    work = tmp_path_factory.mktemp("prometheus")
    (work / "rules.yaml").write_text(yaml.safe_dump(rule_groups_fast()), encoding="utf-8")
    targets = [f"127.0.0.1:{node['MetricsExportPort']}" for node in ray.nodes() if node["Alive"]]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / "rules.yaml")],
        "scrape_configs": [{"job_name": "ray", "static_configs": [{"targets": targets}]}],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    wait_for_settled_counters(targets)
    url = f"http://127.0.0.1:{free_port()}"
    with open(work / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address={url.removeprefix('http://')}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (work / "prometheus.log").read_text(errors="replace")[-2000:]
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def http_requests_by_status(targets: list[str]) -> dict[tuple[str, str], float]:
    """zhserve's HTTP request counters summed over the nodes' export ports, by (route, status)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[tuple[str, str], float] = {}
    for target in targets:
        text = httpx.get(f"http://{target}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            if family.name != "ray_serve_num_http_requests":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("application") == "zhserve":
                    key = (sample.labels.get("route", ""), sample.labels.get("status_code", ""))
                    totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def wait_for_settled_counters(targets: list[str], timeout_s: float = 120.0) -> None:
    """Wait until the request counters stop moving for three report intervals: the tests before this
    module (the overload test's 503s) are exported a report interval late, and a Prometheus started
    before they land would count them as this module's errors."""
    quiet_s = 3 * METRICS_REPORT_INTERVAL_MS / 1000
    deadline = time.monotonic() + timeout_s
    last = http_requests_by_status(targets)
    since = time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, f"request counters still moving after {timeout_s:.0f} s: {last}"
        time.sleep(0.5)
        now = http_requests_by_status(targets)
        if now != last:
            last, since = now, time.monotonic()


def send_traffic(url: str) -> None:
    long_document = (NEWS + REVIEW) * 40
    for text in (NEWS, REVIEW, long_document):
        assert httpx.post(f"{url}/v1/analyze", json={"text": text}, timeout=60).status_code == 200
    assert httpx.post(f"{url}/v1/analyze", json={"text": ""}, timeout=60).status_code == 422


def test_promtool_accepts_the_alert_rules(tmp_path: Path) -> None:
    require_program(PROMTOOL)
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule_groups()), encoding="utf-8")
    checked = subprocess.run([str(PROMTOOL), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in rule_groups()['groups'])} rules found" in checked.stdout


def test_every_dashboard_query_returns_live_series(prometheus: str, zhserve_url: str) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 15
    empty: list[str] = [title for title, _ in queries]
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        send_traffic(zhserve_url)
        empty = [f"{title}: {expr}" for title, expr in queries if not query(prometheus, expr)]
        requests = query(prometheus, queries[0][1])
        analyzed = [
            s for s in requests if s["metric"].get("route") == "/v1/analyze" and s["metric"].get("status_code") == "200"
        ]
        if not empty and analyzed and values(analyzed)[0] > 0:
            break
        time.sleep(2)
    assert empty == [], "dashboard queries without data:\n" + "\n".join(empty)
    assert analyzed and values(analyzed)[0] > 0

    def reading(metric: str) -> list[dict[str, Any]]:
        (expr,) = [expr for _, expr in queries if f"({metric}{{" in expr]
        return query(prometheus, expr)

    memory = values(reading("ray_zhserve_replica_resident_bytes"))
    assert memory and all(0 < share < 1 for share in memory), memory  # RSS is some of the 1,024 MiB budget
    entities = reading("ray_zhserve_entities_total")
    assert {series["metric"]["label"] for series in entities} >= {"PER", "LOC", "ORG"}
    healthy = values(reading("ray_serve_deployment_replica_healthy"))
    assert healthy and all(not math.isnan(v) and v >= 1 for v in healthy)


def test_alert_rules_evaluate_and_a_healthy_service_raises_no_outage_alert(prometheus: str, zhserve_url: str) -> None:
    expected = {rule["alert"] for group in rule_groups()["groups"] for rule in group["rules"]}
    deadline = time.monotonic() + 60
    rules: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if rules and all(rule.get("lastEvaluation", "").startswith("20") for rule in rules):
            break
        time.sleep(1)
    assert {rule["name"] for rule in rules} == expected
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
    states = {rule["name"]: rule["state"] for rule in rules}
    assert states["ZhserveNoHealthyReplica"] == "inactive"
    assert states["ZhserveServerErrors"] == "inactive"


def test_a_real_outage_fires_its_alert(prometheus: str, zhserve_url: str) -> None:
    """Every request failing (a time limit no request can meet, applied live) fires
    ZhserveServerErrors in the test Prometheus; and the no-healthy-replica alert's expression
    also answers when a deployment's series are missing altogether (absent())."""
    from tests.conftest import deploy_applications, wait_ready, zhserve_application

    firing: list[dict[str, Any]] = []
    try:
        # A limit the texts' own work fits (admission lets them in) that no model call can meet:
        # the models' batches now wait 2 s to fill.
        slow = {"max_batch_size": 64, "batch_wait_timeout_s": 2.0}
        deploy_applications(
            zhserve_application(user_config={"Ingress": {"request_timeout_s": 0.3}, "NER": slow, "Sentiment": slow})
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not firing:
            for _ in range(20):
                httpx.post(f"{zhserve_url}/v1/analyze", json={"text": NEWS}, timeout=30)
            alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
            firing = [a for a in alerts if a["labels"]["alertname"] == "ZhserveServerErrors" and a["state"] == "firing"]
            time.sleep(1)
    finally:
        deploy_applications(zhserve_application())
        wait_ready(zhserve_url)
    assert firing, "ZhserveServerErrors did not fire while every request failed"
    assert firing[0]["labels"]["severity"] == "critical"

    (rule,) = [r for g in rule_groups()["groups"] for r in g["rules"] if r["alert"] == "ZhserveNoHealthyReplica"]
    gone = rule["expr"].replace('application="zhserve"', 'application="zhserve-not-deployed"')
    assert {series["metric"].get("deployment") for series in query(prometheus, gone)} == {"NER", "Sentiment", "Ingress"}
