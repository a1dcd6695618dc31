"""Multi-node, as users run it (README "Multi-node"): a head node with no CPUs and two worker
nodes on this machine, started with `ray start`, and `serve deploy serve_config.cluster.yaml` run
from an unrelated directory. Every deployment keeps a replica on each worker; one worker node is
killed under load: HAProxy replays on another Ingress replica what the lost one held and what
was sent to it before HAProxy saw it go, but for the few requests README "Multi-node" names.

Its own cluster, driven only through the CLI and HTTP (never ray.init: the session's cluster
lives in this process)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import yaml

from tests.conftest import REPO_ROOT, free_port
from tests.support.cluster import LocalCluster
from tests.support.load import Load

pytestmark = pytest.mark.serve

NEWS = "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。"
REVIEW = "房间干净，服务很贴心，下次还来。"


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    import os

    from serve_app.launch import fast_path_environment

    environment, _ = fast_path_environment(os.environ, local=True)  # as `make run` and the image set it
    local = LocalCluster(environment)
    try:
        local.start_head()
        local.add_worker("worker1")
        local.add_worker("worker2")
        yield local
    finally:
        local.shutdown()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def test_a_worker_node_lost_under_load_costs_almost_nothing(cluster: LocalCluster) -> None:
    config = yaml.safe_load((REPO_ROOT / "serve_config.cluster.yaml").read_text(encoding="utf-8"))
    port = free_port()
    config["http_options"]["port"] = port  # the file as shipped, on a free port
    deployed = cluster.workdir / "serve_config.cluster.yaml"  # away from the checkout: paths must still resolve
    deployed.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    cluster.serve_deploy(deployed)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    spread: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        spread = cluster.replica_nodes()
        if sorted(spread) == ["Ingress", "NER", "Sentiment"] and all(len(set(n)) == 2 for n in spread.values()):
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
        time.sleep(1)
    else:
        pytest.fail(f"not deployed on two nodes each within 240 s: {spread}")
    head = cluster.node_id("head")
    assert all(head not in nodes for nodes in spread.values()), "a replica on the CPU-less head"

    payloads = [{"text": NEWS}, {"text": REVIEW}, {"text": NEWS * 5}, {"text": NEWS * 20}] * 2  # 8 clients
    readyz_back: float | None = None
    with Load(url, "/v1/analyze", payloads, timeout_s=130) as load:
        time.sleep(10)  # 10 s of load, the loss, 30 s more: as the 8-client, ~3,000-request runs
        killed_at = time.monotonic()
        assert cluster.kill_node("worker1") > 0
        while time.monotonic() - killed_at < 60:
            try:
                ready = httpx.get(f"{url}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready and readyz_back is None and time.monotonic() - killed_at > 2:
                readyz_back = time.monotonic() - killed_at
            if readyz_back is not None and time.monotonic() - killed_at > 30:
                break
            time.sleep(0.5)
    load.check_clients()  # none hung past its timeout, none raised

    answers = load.answers
    ok = [answer for answer in answers if answer.status == 200]
    after = [answer.elapsed_s for answer in load.during(killed_at - 1, float("inf"))]
    share = len(ok) / len(answers)
    p99_after = percentile(after, 0.99)
    failed = [(a.status, a.error or a.body) for a in answers if a.status != 200]
    print(
        f"worker node lost under 8 clients: {len(ok)}/{len(answers)} answered ({share:.2%}), "
        f"p99 after the loss {p99_after:.2f} s, slowest {max(after):.2f} s, /readyz 200 {readyz_back} s after; "
        f"failures {[(round(a.sent - killed_at, 2), a.status) for a in answers if a.status != 200]}"
    )
    # HAProxy replays on the other Ingress replica what the lost one held (RAY_SERVE_HAPROXY_RETRY_ON;
    # every body here fits its 16 KiB buffer, which a replay needs) and what was sent to it after the
    # loss. What it does not replay (README "Multi-node"): some requests in flight on the lost replica
    # (their connection closed without an answer, and no HAProxy log line), and a request sent in
    # the ~0.2 s before HAProxy marks the replica down over a kept-alive connection to it (a 500).
    # So every failure is one of those, at most one per client, and nothing sent later fails.
    unanswered = [a for a in answers if a.status != 200]
    late = [a for a in unanswered if a.sent > killed_at + 1]
    assert not late, f"failed more than 1 s after the loss: {[(a.sent - killed_at, a.status) for a in late]}"
    assert len(unanswered) <= len(payloads), failed
    assert all(a.status in (0, 500) for a in unanswered), failed
    assert readyz_back is not None and readyz_back <= 60
    assert p99_after < 5, f"p99 after the node loss {p99_after:.1f} s"
    for answer in ok:
        for entity in answer.body["ner"]["entities"]:
            assert answer.payload["text"][entity["start"] : entity["end"]] == entity["text"]
