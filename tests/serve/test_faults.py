"""Faults: a model replica killed under load loses no request, and the service recovers by itself.

The NER replica is killed the way a crash or an out-of-memory kill would take it (``ray.kill``,
no restart) while clients keep sending requests over loopback HTTP. Serve's controller replaces
the replica; the ingress retries a call whose replica was lost, so every client still gets its
full, correct answer. Bounded in time.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.serve

NEWS = "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。"
LONG = NEWS * 60  # about 2,000 characters: many sentences, calls in flight on the replica


def ner_replicas() -> list[str]:
    import ray

    return sorted(
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith("SERVE_REPLICA::zhserve#NER#")
    )


def ner_is_healthy() -> bool:
    from ray import serve

    return bool(serve.status().applications["zhserve"].deployments["NER"].status == "HEALTHY")


def test_killed_ner_replica_loses_no_request(zhserve_url: str) -> None:
    import ray

    before = ner_replicas()
    assert before, "no NER replica found"
    results: list[tuple[float, str, int, dict]] = []  # type: ignore[type-arg]
    stop = threading.Event()

    def client(text: str) -> None:
        with httpx.Client(timeout=120) as http:
            while not stop.is_set():
                sent = time.monotonic()
                response = http.post(f"{zhserve_url}/v1/analyze", json={"text": text, "tasks": ["ner"]})
                results.append((sent, text, response.status_code, response.json()))

    threads = [threading.Thread(target=client, args=(text,)) for text in (NEWS, NEWS, LONG, LONG)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        killed_at = time.monotonic()
        for name in before:  # every NER replica: no live one is left to absorb the calls
            ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
        deadline = killed_at + 120
        while time.monotonic() < deadline:
            replaced = ner_replicas()
            if replaced and not set(replaced) & set(before) and ner_is_healthy():
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"NER was not replaced within 120 s: {ner_replicas()}")
        recovered_at = time.monotonic()
        time.sleep(2)  # and keeps answering on the new replica
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=150)

    failures = [(status, body) for _, _, status, body in results if status != 200]
    assert not failures, f"{len(failures)} of {len(results)} requests failed: {failures[:3]}"
    for _, text, _, body in results:
        entities = body["ner"]["entities"]
        assert all(text[e["start"] : e["end"]] == e["text"] for e in entities)
        assert {("马云", "PER"), ("北京大学", "ORG")} <= {(e["text"], e["label"]) for e in entities}
        assert len(entities) == 5 * text.count(NEWS)
    during = [sent for sent, *_ in results if killed_at - 1 <= sent <= recovered_at]
    assert during, "no request was in flight while the replica was down"
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
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"{zhserve_url}/v1/ner", json={"text": NEWS}, timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        pytest.fail("the service did not answer on its port again within 120 s")
    assert set(_haproxy_processes().values()).isdisjoint(managers)
