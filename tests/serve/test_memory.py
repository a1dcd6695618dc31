"""The memory budget, enforced on the real cluster: a model replica that really grows past its
budget (the test-only ``grow`` hook, as a leak would) refuses work, which the ingress repeats on
its sibling, and Serve replaces it within 15 s while a concurrent load loses no request; an
allocation past the replica's cap fails alone with MemoryError and the replica goes on serving.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import httpx
import pytest

from tests.conftest import deploy_applications, zhserve_application
from tests.support.load import Load

pytestmark = pytest.mark.serve

NEWS = "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。"
BUDGET_MB = 600  # idle replicas hold ~220 MiB


def two_ner_replicas() -> dict[str, Any]:
    application = zhserve_application(user_config={"NER": {"memory_limit_mb": BUDGET_MB}})
    for deployment in application["deployments"]:
        if deployment["name"] == "NER":
            scaling = copy.deepcopy(deployment["autoscaling_config"])
            scaling.update(min_replicas=2, max_replicas=2)
            deployment["autoscaling_config"] = scaling
    return application


def ner_replicas() -> set[str]:
    import ray

    return {
        actor["name"].rsplit("#", 1)[1]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith("SERVE_REPLICA::zhserve#NER#")
    }


def running_ner() -> int:
    from ray import serve
    from ray.serve._private.common import ReplicaState

    states = serve.status().applications["zhserve"].deployments["NER"].replica_states
    return int(states.get(ReplicaState.RUNNING, 0))


def wait_until(predicate, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())


def test_a_replica_grown_past_its_budget_is_replaced_and_no_request_is_lost(zhserve_url: str) -> None:
    from ray import serve

    handle = serve.get_deployment_handle("NER", app_name="zhserve")
    try:
        deploy_applications(two_ner_replicas())
        assert wait_until(lambda: running_ner() == 2 and len(ner_replicas()) == 2, 120), ner_replicas()
        before = ner_replicas()
        payloads = [{"text": NEWS, "tasks": ["ner"]}, {"text": NEWS * 20, "tasks": ["ner"]}] * 2
        with Load(zhserve_url, "/v1/analyze", payloads) as load:
            time.sleep(2)
            idle_mb = handle.stats.remote().result(timeout_s=30).rss_bytes >> 20  # the two replicas are alike
            # 50 MiB over the budget: past it (refuse, replace), below the cap (budget + 25 %)
            grown = handle.grow.remote(BUDGET_MB + 50 - idle_mb).result(timeout_s=30)
            grown_at = time.monotonic()
            assert grown["rss_bytes"] > BUDGET_MB << 20, grown
            assert grown["replica"] in before
            replaced = wait_until(lambda: grown["replica"] not in ner_replicas() and running_ner() == 2, 60)
            replaced_after = time.monotonic() - grown_at
            time.sleep(2)
        load.check_clients()
        assert replaced, f"the grown replica {grown['replica']} was not replaced: {ner_replicas()}"
        assert replaced_after <= 15, f"replaced only after {replaced_after:.1f} s"
        failures = load.failures()
        assert not failures, f"{len(failures)} of {len(load.answers)} failed: {[a.body for a in failures[:3]]}"
        assert load.during(grown_at, grown_at + replaced_after), "no request while the replica was over budget"
        assert all(len(a.body["ner"]["entities"]) == 5 * a.payload["text"].count(NEWS) for a in load.answers)
        print(
            f"over-budget replica replaced {replaced_after:.1f} s after it grew; {len(load.answers)} requests, 0 lost"
        )

        # An allocation past the cap (budget + its margin) fails by itself; the replica lives on.
        survivors = ner_replicas()
        with pytest.raises(Exception) as failed:
            handle.grow.remote(4 * BUDGET_MB).result(timeout_s=30)
        assert "MemoryError" in repr(failed.value) or isinstance(failed.value, MemoryError), repr(failed.value)
        time.sleep(3)
        assert ner_replicas() == survivors and running_ner() == 2
        assert httpx.post(f"{zhserve_url}/v1/ner", json={"text": NEWS}, timeout=30).status_code == 200
    finally:
        deploy_applications(zhserve_application())
    assert wait_until(lambda: running_ner() == 1, 120)
    assert httpx.post(f"{zhserve_url}/v1/ner", json={"text": NEWS}, timeout=30).status_code == 200


def test_the_grow_hook_is_off_without_the_test_switch() -> None:
    import os

    from deployments.server import TEST_HOOKS_ENV, ModelServerBase

    server = ModelServerBase.__new__(ModelServerBase)
    saved = os.environ.pop(TEST_HOOKS_ENV, None)
    try:
        with pytest.raises(PermissionError):
            server.grow(1)
    finally:
        if saved is not None:
            os.environ[TEST_HOOKS_ENV] = saved
