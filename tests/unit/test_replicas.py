"""The replica watcher without Ray: counts read from fake routers, the controller asked only while
a router has heard of no replica, fail-fast after the wait and recovery."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from serve_app.replicas import ReplicaWatcher, router_replicas


@dataclass
class FakeHandle:
    deployment_name: str
    app_name: str = "zhserve"


class Recorder:
    def __init__(self) -> None:
        self.sized: list[dict[str, int]] = []
        self.down: list[tuple[str, str]] = []
        self.up: list[str] = []


def watcher(counts: dict[str, int | None], controller: dict[str, int], wait_s: float = 3.0) -> tuple[Any, Recorder]:
    handles = {"ner": FakeHandle("NER"), "sentiment": FakeHandle("Sentiment")}
    recorder = Recorder()
    asked: list[int] = []

    def ask() -> dict[str, int]:
        asked.append(1)
        return dict(controller)

    watch = ReplicaWatcher(
        handles,
        no_replica_wait_s=lambda: wait_s,
        on_counts=recorder.sized.append,
        on_down=lambda task, reason: recorder.down.append((task, reason)),
        on_up=recorder.up.append,
        count=lambda handle: counts["ner" if handle.deployment_name == "NER" else "sentiment"],
        ask_controller=ask,
    )
    watch.asked = asked  # type: ignore[attr-defined]
    return watch, recorder


def test_counts_come_from_the_routers_and_the_controller_is_not_asked() -> None:
    watch, recorder = watcher({"ner": 2, "sentiment": 1}, {"ner": 9, "sentiment": 9})
    asyncio.run(watch.poll(now=0.0))
    assert watch.counts == {"ner": 2, "sentiment": 1}
    assert recorder.sized == [{"ner": 2, "sentiment": 1}]
    assert watch.asked == []


def test_the_controller_is_asked_only_for_a_router_that_has_heard_nothing() -> None:
    watch, _ = watcher({"ner": None, "sentiment": 1}, {"ner": 0, "sentiment": 7})
    asyncio.run(watch.poll(now=0.0))
    assert watch.counts == {"ner": 0, "sentiment": 1}  # the router's count wins where it has one
    assert len(watch.asked) == 1


def test_a_model_without_replicas_fails_fast_after_the_wait_and_recovers() -> None:
    counts: dict[str, int | None] = {"ner": 0, "sentiment": 1}
    watch, recorder = watcher(counts, {}, wait_s=3.0)
    asyncio.run(watch.poll(now=10.0))
    asyncio.run(watch.poll(now=12.9))
    assert recorder.down == []
    asyncio.run(watch.poll(now=13.0))
    assert recorder.down == [("ner", "the NER model has no running replica")]
    asyncio.run(watch.poll(now=20.0))
    assert len(recorder.down) == 1  # reported once
    counts["ner"] = 1
    asyncio.run(watch.poll(now=21.0))
    assert recorder.up == ["ner"]
    counts["ner"] = 0
    asyncio.run(watch.poll(now=22.0))
    asyncio.run(watch.poll(now=24.0))
    assert len(recorder.down) == 1  # the wait starts again
    asyncio.run(watch.poll(now=25.0))
    assert len(recorder.down) == 2


def test_a_handle_without_a_router_has_no_count() -> None:
    assert router_replicas(FakeHandle("NER")) is None
