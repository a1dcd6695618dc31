"""Faults: a model replica killed under load loses no request, the Ingress replica killed costs
only the requests it held, and the service recovers by itself.

Replicas are killed the way a crash or an out-of-memory kill would take them (``ray.kill``, no
restart) while clients keep sending requests over loopback HTTP. Serve's controller replaces
them; the ingress retries a model call whose replica was lost, so every client still gets its
full, correct answer. Every client thread must end and none may raise. Bounded in time.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import deploy_applications, wait_ready, zhserve_application
from tests.support.load import Answer, Load, wait_answering

pytestmark = pytest.mark.serve

NEWS = "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。"
LONG = NEWS * 60  # about 2,000 characters: many sentences, calls in flight on the replica
REVIEW = "房间干净，服务很贴心，下次还来。"


def replicas(deployment: str) -> list[str]:
    import ray

    return sorted(
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith(f"SERVE_REPLICA::zhserve#{deployment}#")
    )


def is_healthy(deployment: str) -> bool:
    from ray import serve

    return bool(serve.status().applications["zhserve"].deployments[deployment].status == "HEALTHY")


def kill_all(deployment: str) -> tuple[list[str], float]:
    import ray

    before = replicas(deployment)
    assert before, f"no {deployment} replica found"
    killed_at = time.monotonic()
    for name in before:  # every replica: no live one is left to absorb the calls
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    return before, killed_at


def wait_replaced(deployment: str, before: list[str], timeout_s: float = 120) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = replicas(deployment)
        if now and not set(now) & set(before) and is_healthy(deployment):
            return time.monotonic()
        time.sleep(0.5)
    pytest.fail(f"{deployment} was not replaced within {timeout_s} s: {replicas(deployment)}")


@pytest.mark.parametrize(
    ("deployment", "task", "texts"),
    [("NER", "ner", (NEWS, NEWS, LONG, LONG)), ("Sentiment", "sentiment", (REVIEW, REVIEW, LONG, LONG))],
)
def test_killed_model_replicas_lose_no_request(zhserve_url: str, deployment: str, task: str, texts: tuple) -> None:  # type: ignore[type-arg]
    payloads = [{"text": text, "tasks": [task]} for text in texts]
    expected = {}
    for payload in payloads:  # each text's full answer before the fault
        response = httpx.post(f"{zhserve_url}/v1/analyze", json=payload, timeout=60)
        assert response.status_code == 200, response.text
        expected[payload["text"]] = response.json()[task]
    with Load(zhserve_url, "/v1/analyze", payloads) as load:
        time.sleep(2)
        before, killed_at = kill_all(deployment)
        recovered_at = wait_replaced(deployment, before)
        time.sleep(2)  # and keeps answering on the new replica
    load.check_clients()
    failures = load.failures()
    assert not failures, f"{len(failures)} of {len(load.answers)} failed: {[(a.status, a.body) for a in failures[:3]]}"
    for answer in load.answers:  # complete and correct: what the same text got before the fault
        assert answer.body[task] == expected[answer.payload["text"]]
    for answer in load.answers:
        for entity in answer.body.get("ner", {}).get("entities", []):
            assert answer.payload["text"][entity["start"] : entity["end"]] == entity["text"]
    assert load.during(killed_at - 1, recovered_at), "no request was in flight while the replicas were down"
    assert httpx.get(f"{zhserve_url}/readyz", timeout=30).status_code == 200


def test_killed_ingress_replica_costs_only_its_requests_and_is_replaced(zhserve_url: str) -> None:
    """The Ingress replica holds the HTTP requests themselves: the ones in flight when it dies get
    an error answer at once (never a hang), requests are answered again as soon as Serve has
    replaced it, and everything sent after that succeeds."""

    def back_off(answer: Answer) -> float:
        return 0.0 if answer.status == 200 else 0.5  # a client retrying politely while it is down

    payloads = [{"text": NEWS}, {"text": LONG}, {"text": REVIEW}, {"text": LONG}]
    with Load(zhserve_url, "/v1/analyze", payloads, timeout_s=60, on_answer=back_off) as load:
        time.sleep(2)
        before, killed_at = kill_all("Ingress")
        recovered_at = wait_replaced("Ingress", before)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the proxy routes to the new replica
            if load.answers and load.answers[-1].status == 200 and load.answers[-1].sent > recovered_at:
                break
            time.sleep(0.2)
        answering_at = time.monotonic()
        time.sleep(3)
    load.check_clients()
    assert answering_at - killed_at < 90, f"answered again only {answering_at - killed_at:.0f} s after the kill"
    slow = [answer for answer in load.answers if answer.status != 200 and answer.elapsed_s > 30]
    assert not slow, f"failed requests waited: {[(a.status, round(a.elapsed_s, 1)) for a in slow[:3]]}"
    late = [answer for answer in load.during(answering_at + 1, float("inf")) if answer.status != 200]
    assert not late, f"failures after recovery: {[(a.status, a.error or a.body) for a in late[:3]]}"
    assert load.during(answering_at + 1, float("inf")), "no request after recovery"
    assert len([answer for answer in load.answers if answer.sent < killed_at and answer.status == 200]) > 0
    assert httpx.get(f"{zhserve_url}/readyz", timeout=30).status_code == 200


def _haproxy_processes() -> dict[int, int]:
    """HAProxy processes on this machine: pid → parent pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")[0]
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if command.endswith(b"/haproxy"):
            found[int(entry.name)] = parent
    return found


def test_haproxy_ends_with_its_manager_and_the_port_is_taken_again(zhserve_url: str) -> None:
    """`ray stop --force` SIGKILLs Serve's HAProxy manager; its HAProxy must not outlive it and
    hold the port (the next start failed on it). Killing the manager here the same way: its
    HAProxy ends, Serve starts a new manager, and the new HAProxy serves the same port."""
    import os
    import signal

    processes = _haproxy_processes()
    assert processes, "the test cluster runs no HAProxy: the fast path is off"
    managers = set(processes.values())
    for manager in managers:
        os.kill(manager, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and set(_haproxy_processes()) & set(processes):
        time.sleep(0.1)
    assert not set(_haproxy_processes()) & set(processes), "HAProxy outlived its killed manager"
    if not wait_answering(zhserve_url, "/v1/ner", {"text": NEWS}, 120):
        pytest.fail("the service did not answer on its port again within 120 s")
    assert set(_haproxy_processes().values()).isdisjoint(managers)


def test_a_model_without_any_replica_fails_fast_and_readyz_names_it(zhserve_url: str) -> None:
    """A model whose replica cannot be placed (as when a lost node's replica fits nowhere): its
    requests wait no_replica_wait_s for a replacement, then get 503 models_not_ready with
    Retry-After, never a hang; new requests are refused at once; the other model keeps
    answering; /readyz names the missing model."""

    application = zhserve_application(
        name="unplaced", route_prefix="/unplaced", user_config={"Ingress": {"no_replica_wait_s": 3}}
    )
    for deployment in application["deployments"]:
        if deployment["name"] == "NER":  # a resource no node has: the replica never starts
            deployment["ray_actor_options"] = {**deployment["ray_actor_options"], "resources": {"nowhere": 1}}
    url = f"{zhserve_url}/unplaced"
    try:
        deploy_applications(zhserve_application(), application, wait=False)  # declarative: both apps
        # the ingress and Sentiment start; NER never does
        if not wait_answering(url, "/v1/sentiment", {"text": REVIEW}, 120):
            pytest.fail("the application's ingress and Sentiment did not start")
        started = time.monotonic()
        first = httpx.post(f"{url}/v1/ner", json={"text": NEWS}, timeout=60)
        first_s = time.monotonic() - started
        started = time.monotonic()
        second = httpx.post(f"{url}/v1/analyze", json={"text": NEWS}, timeout=60)
        second_s = time.monotonic() - started
        ready = httpx.get(f"{url}/readyz", timeout=30)
        sentiment = httpx.post(f"{url}/v1/sentiment", json={"text": REVIEW}, timeout=30)
    finally:
        deploy_applications(zhserve_application())
    for response in (first, second):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "models_not_ready"
        assert int(response.headers["retry-after"]) >= 1
        assert "NER" in response.json()["error"]["message"]
    assert first_s < 3 + 5, f"the first request waited {first_s:.1f} s"  # no_replica_wait_s + the follower's tick
    assert second_s < 1, f"a request after the wait was not refused at once: {second_s:.1f} s"
    assert ready.status_code == 503 and "ner" in ready.json()["error"]["message"].lower()
    assert sentiment.status_code == 200
    print(f"no NER replica: first request 503 after {first_s:.1f} s, the next after {second_s:.2f} s")
    wait_ready(zhserve_url)
