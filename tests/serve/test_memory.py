"""The memory budget, enforced on the real cluster: a model replica that really grows past its
budget (the test-only ``grow`` hook, as a leak would) refuses work, which the ingress repeats on
its sibling, and Serve replaces it within 15 s while a concurrent load loses no request; a call
whose estimated memory does not fit the budget's headroom is computed in pieces that do, while
short requests are answered, and the replica stays within its budget and is not replaced.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import httpx
import numpy as np
import pytest

from deployments.memory import ESTIMATE_MARGIN
from tests.conftest import REPO_ROOT, deploy_applications, zhserve_application
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
        alone = httpx.post(f"{zhserve_url}/v1/ner", json={"text": NEWS}, timeout=30).json()["entities"]
        assert len(alone) >= 4, alone
        payloads = [{"text": NEWS, "tasks": ["ner"]}, {"text": NEWS * 20, "tasks": ["ner"]}] * 2
        with Load(zhserve_url, "/v1/analyze", payloads) as load:
            time.sleep(2)
            idle_mb = handle.stats.remote().result(timeout_s=30).rss_bytes >> 20  # the two replicas are alike
            # 50 MiB over the budget: the replica refuses work and fails its health check
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
        # every answer whole: as many entities per copy of NEWS as NEWS alone has
        assert all(len(a.body["ner"]["entities"]) == len(alone) * a.payload["text"].count(NEWS) for a in load.answers)
        print(
            f"over-budget replica replaced {replaced_after:.1f} s after it grew; {len(load.answers)} requests, 0 lost"
        )
    finally:
        deploy_applications(zhserve_application())
    assert wait_until(lambda: running_ner() == 1, 120)
    assert httpx.post(f"{zhserve_url}/v1/ner", json={"text": NEWS}, timeout=30).status_code == 200


LONG_UNIT = "马云在杭州阿里巴巴总部会见了来自北京大学的李明教授" * 9  # 234 characters, one CNN NER window
BATCH_ROWS = 64
# Calls are narrowed for models that compute a call as one padded batch: the CNN tier (and exported
# BERT-base models). A dynamic-INT8 model (the default ensemble, the e5 tier) computes one row per
# ONNX call, so its activation memory never grows with the call.
PADDED_NER = REPO_ROOT / "models" / "ner"


def with_ner_budget(budget_mb: int | None) -> dict[str, Any]:
    """One CNN NER replica that computes up to 64 full windows at once (max_batch_tokens)."""
    ner = {"max_batch_tokens": BATCH_ROWS * 256, "memory_limit_mb": budget_mb}
    return zhserve_application(args={"ner_model": str(PADDED_NER)}, user_config={"NER": ner})


def test_a_call_too_large_for_the_headroom_is_computed_in_pieces_within_the_budget(zhserve_url: str) -> None:
    """The ingress keeps its own calls small (~50 ms of work), so the large call is sent to the
    NER replica directly: 64 full windows in one call, ~15,000 padded positions."""
    from ray import serve

    from deployments.runtime.answers import TagRows
    from deployments.runtime.ner import NerModel
    from deployments.runtime.rows import TokenRows

    handle = serve.get_deployment_handle("NER", app_name="zhserve")
    ids = np.asarray(NerModel.from_model_dir(PADDED_NER).tokenizer.tokenize([LONG_UNIT])[0][0], dtype=np.int32)
    try:
        deploy_applications(with_ner_budget(None))
        assert wait_until(lambda: running_ner() == 1 and len(ner_replicas()) == 1, 120), ner_replicas()
        (replica,) = ner_replicas()
        alone: TagRows = handle.predict.remote(TokenRows.pack([ids])).result(timeout_s=30)
        before = handle.memory_stats.remote().result(timeout_s=30)
        positions = BATCH_ROWS * (len(ids) + 2)
        whole = math.ceil(before.bytes_per_token * positions * ESTIMATE_MARGIN)  # the budget's estimate of the call
        assert before.bytes_per_token > 0 and before.largest_positions < positions
        # Headroom for half of the call, not the whole: without the estimate, the whole call would
        # be allowed to grow the replica past its budget.
        headroom = (whole // 2 >> 20) + 8
        budget_mb = math.ceil(before.resident_bytes / (1 << 20)) + headroom
        assert whole > headroom << 20
        deploy_applications(with_ner_budget(budget_mb))  # user_config only: applied live, same replica
        assert ner_replicas() == {replica}

        with Load(zhserve_url, "/v1/ner", [{"text": NEWS}] * 2) as load:
            time.sleep(1)
            started = time.monotonic()
            answered = handle.predict.remote(TokenRows.pack([ids] * BATCH_ROWS)).result(timeout_s=120)
            took = time.monotonic() - started
            time.sleep(1)
        load.check_clients()
        assert isinstance(answered, TagRows), answered  # not a list of ItemErrors: every row answered
        for tags in answered.rows():
            assert np.array_equal(tags[0], alone.rows()[0][0])
        assert not load.failures() and load.during(started - 1, started + took + 1), "short requests not answered"

        after = handle.memory_stats.remote().result(timeout_s=30)
        assert after.narrowed_batches > before.narrowed_batches, after
        assert after.refused_rows == 0 and after.resident_bytes <= budget_mb << 20, after
        assert ner_replicas() == {replica} and running_ner() == 1
        print(
            f"call of {positions} positions (estimate {whole >> 20} MiB) under {headroom} MiB of headroom: computed "
            f"in pieces in {took:.2f} s; replica at {after.resident_bytes >> 20} of {budget_mb} MiB "
            f"(idle {before.resident_bytes >> 20}), {before.bytes_per_token:.0f} B per position; "
            f"{len(load.answers)} short requests answered"
        )
    finally:
        deploy_applications(zhserve_application())
    assert wait_until(lambda: running_ner() == 1, 120)


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
