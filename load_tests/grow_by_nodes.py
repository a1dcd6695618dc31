"""Growing by nodes, measured: zhserve's cluster config on an autoscaling Ray cluster on this
machine (tests/support/autoscaling.py: Ray's fake multi-node provider, a CPU-less head and worker
nodes shaped like the RayService's worker pod), sustained load, then a trickle while it shrinks.

    .venv/bin/python -m load_tests.grow_by_nodes [--clients 16] [--chars 2000] [--json out.json]

Run it from the checkout's root, on an otherwise idle machine (it starts up to 5 raylets). It
deploys serve_config.cluster.yaml as shipped (models autoscale 2 → 4 replicas, one per node) with
the environment ``python -m serve_app.launch env`` gives every node, sends ``--clients`` threads of
``--chars``-character documents to /v1/analyze until both models run their maximum (or
``--max-load-s``), then ``--trickle-clients`` threads, each pausing ``--trickle-pause-s`` between requests, through
the scale-down, and prints the
timeline, seconds from the load's start:

    load start → a model wants more replicas than the worker nodes hold → a worker node added →
    a replica running on it → … → load stopped → replicas back to the minimum → nodes back down

and every request's outcome: a request cut by the scale-down (a replica or a node going away under
it) would show as a failure. tests/cluster/test_grow_by_nodes.py runs it and checks the order.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SENTENCES = (
    "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。",
    "这家酒店的服务很好，房间干净整洁，下次还会再来。",
    "国务院新闻办公室今天上午在北京举行新闻发布会。",
    "华为公司在深圳发布了新款手机，售价比上一代便宜了五百元。",
    "快递太慢了，包装也破了，客服一直不回复，非常失望。",
)
MODELS = ("NER", "Sentiment")
DEPLOYMENTS = ("Ingress", *MODELS)


def document(chars: int, seed: int) -> str:
    """``chars`` characters of news and reviews, starting at sentence ``seed`` (each client its own)."""
    parts: list[str] = []
    while sum(map(len, parts)) < chars:
        parts.append(SENTENCES[(seed + len(parts)) % len(SENTENCES)])
    return "".join(parts)[:chars]


@dataclass
class Sample:
    t: float  # seconds since the load started (negative before)
    workers: int  # alive worker nodes
    target: dict[str, int]  # Serve's target replicas per deployment
    running: dict[str, int]  # RUNNING replicas per deployment


@dataclass
class Timeline:
    samples: list[Sample] = field(default_factory=list)
    events: dict[str, float | None] = field(default_factory=dict)
    load_stopped_at: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    peak_workers: int = 0
    peak_running: dict[str, int] = field(default_factory=dict)


class Monitor(threading.Thread):
    """Samples nodes and replicas every ``period_s`` through the head's dashboard (Ray's state API
    and Serve's REST API: what `ray list nodes` and `serve status` read)."""

    def __init__(self, dashboard: str, period_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

        self.dashboard = dashboard
        self.period_s = period_s
        self.serve = ServeSubmissionClient(dashboard)
        self.origin = time.monotonic()
        self.samples: list[Sample] = []
        self._done = threading.Event()

    def sample(self) -> Sample | None:
        from ray.util.state import list_nodes

        try:
            # All nodes, filtered here: once the autoscaler has removed a node, Ray's state API
            # refuses a server-side state filter ("data truncation"), and every sample failed.
            nodes = list_nodes(address=self.dashboard, timeout=10, raise_on_missing_output=False)
            details = self.serve.get_serve_details()
        except Exception:  # the dashboard busy or restarting: the next sample will tell
            return None
        deployments = details.get("applications", {}).get("zhserve", {}).get("deployments", {})
        target = {name: int(deployments.get(name, {}).get("target_num_replicas", 0)) for name in DEPLOYMENTS}
        running = {
            name: sum(r.get("state") == "RUNNING" for r in deployments.get(name, {}).get("replicas", []))
            for name in DEPLOYMENTS
        }
        workers = sum(node.state == "ALIVE" and not node.is_head_node for node in nodes)
        return Sample(time.monotonic() - self.origin, workers, target, running)

    def run(self) -> None:
        while not self._done.is_set():
            sample = self.sample()
            if sample is not None:
                if not self.samples or (sample.workers, sample.target, sample.running) != (
                    self.samples[-1].workers,
                    self.samples[-1].target,
                    self.samples[-1].running,
                ):
                    print(f"{sample.t:6.1f} s  {sample}", file=sys.stderr, flush=True)  # each change, as it happens
                self.samples.append(sample)
            self._done.wait(self.period_s)

    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=30)


def first(samples: list[Sample], after: float, predicate: Any) -> float | None:
    return next((s.t for s in samples if s.t >= after and predicate(s)), None)


def timeline_events(samples: list[Sample], load_stopped_at: float, minimum: int) -> dict[str, float | None]:
    """The moments the README's timeline names, from the samples (seconds since the load's start)."""
    events: dict[str, float | None] = {"load start": 0.0}
    events["replica wanted beyond the nodes"] = first(
        samples, 0, lambda s: max(s.target[m] for m in MODELS) > s.workers
    )
    events["worker node added"] = first(samples, 0, lambda s: s.workers > minimum)
    events["replica running on it"] = first(samples, 0, lambda s: max(s.running[m] for m in MODELS) > minimum)
    events["a model at maximum"] = first(samples, 0, lambda s: max(s.running[m] for m in MODELS) >= 4)
    events["load stopped"] = load_stopped_at
    events["replicas back to minimum"] = first(
        samples, load_stopped_at, lambda s: all(s.running[d] == minimum == s.target[d] for d in DEPLOYMENTS)
    )
    back = events["replicas back to minimum"]
    events["nodes back to minimum"] = None if back is None else first(samples, back, lambda s: s.workers == minimum)
    return events


def run(
    *,
    clients: int = 16,
    chars: int = 2000,
    trickle_clients: int = 2,
    trickle_pause_s: float = 2.0,
    max_load_s: float = 150,
    hold_s: float = 15,
    max_shrink_s: float = 330,
    idle_timeout_s: float = 20,
) -> Timeline:
    from serve_app.launch import fast_path_environment
    from tests.conftest import free_port
    from tests.support.autoscaling import AutoscalingLocalCluster, WorkerShape
    from tests.support.load import Load

    os.environ.setdefault("RAY_AUTH_MODE", "token")  # this process reads the dashboard as the CLI does
    environment, notes = fast_path_environment(os.environ, local=False)  # `python -m serve_app.launch env`
    for note in notes:
        print(f"zhserve: {note}", file=sys.stderr)
    worker = WorkerShape()
    cluster = AutoscalingLocalCluster(environment, worker=worker, idle_timeout_s=idle_timeout_s)
    timeline = Timeline()
    try:
        cluster.start_head()
        cluster.wait_nodes(1 + worker.min_workers, timeout_s=180)  # the autoscaler's min_workers
        config = yaml.safe_load((REPO_ROOT / "serve_config.cluster.yaml").read_text(encoding="utf-8"))
        port = free_port()
        config["http_options"]["port"] = port  # the file as shipped, on a free port
        deployed = cluster.workdir / "serve_config.cluster.yaml"
        deployed.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        cluster.serve_deploy(deployed)
        url = f"http://127.0.0.1:{port}"
        monitor = Monitor(cluster.dashboard)
        deadline = time.monotonic() + 240
        while True:
            latest = monitor.sample()
            if latest and all(latest.running[d] == worker.min_workers for d in DEPLOYMENTS):
                try:
                    if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"not deployed within 240 s: {latest}")
            time.sleep(1)

        heavy = [{"text": document(chars, seed)} for seed in range(clients)]
        trickle = [{"text": document(chars, seed)} for seed in range(trickle_clients)]
        monitor.origin = time.monotonic()
        monitor.start()
        with Load(url, "/v1/analyze", heavy, timeout_s=130) as load:
            at_max: float | None = None
            while time.monotonic() - monitor.origin < max_load_s:
                latest = monitor.latest()
                # The models scale on their replicas' compute share: the model that is the
                # bottleneck grows; the other may well stay (on 2 shared cores, the CNN NER does).
                if latest and max(latest.running[m] for m in MODELS) >= worker.max_workers:
                    at_max = at_max or time.monotonic()
                    if time.monotonic() - at_max >= hold_s:
                        break
                time.sleep(1)
            # The trickle starts before the heavy load stops: requests are in flight throughout
            # the scale-down, and a replica or node removed under one would cut it.
            # Before the models scaled on their compute share (serve_app/autoscaling_policy.py),
            # such a trickle held every replica: each document keeps a call on every model replica.
            with Load(url, "/v1/analyze", trickle, timeout_s=130, on_answer=lambda _: trickle_pause_s) as tail:
                load.stop()
                timeline.load_stopped_at = time.monotonic() - monitor.origin
                shrink_deadline = time.monotonic() + max_shrink_s
                while time.monotonic() < shrink_deadline:
                    latest = monitor.latest()
                    shrunk = latest and all(latest.running[d] == worker.min_workers for d in DEPLOYMENTS)
                    if shrunk and latest and latest.workers == worker.min_workers:
                        break
                    time.sleep(1)
                time.sleep(2)  # one more sample past the last change
        monitor.stop()
        load.check_clients()
        tail.check_clients()
        answers = load.answers + tail.answers
        timeline.samples = monitor.samples
        timeline.events = timeline_events(monitor.samples, timeline.load_stopped_at, worker.min_workers)
        timeline.requests = {
            "heavy": len(load.answers),
            "heavy answered": sum(a.status == 200 for a in load.answers),
            "during scale-down": len(tail.answers),
            "during scale-down answered": sum(a.status == 200 for a in tail.answers),
        }
        # A 503 `overloaded` is admission control refusing at once (nothing started, Retry-After
        # given): an answer, counted apart. Anything else but a 200 is a failure: a request cut.
        timeline.requests["refused at admission (503 overloaded)"] = sum(map(refused_at_admission, answers))
        timeline.failures = [
            f"{a.status} {a.error or a.body}"[:200] for a in answers if a.status != 200 and not refused_at_admission(a)
        ]
        timeline.peak_workers = max((s.workers for s in monitor.samples), default=0)
        timeline.peak_running = {d: max((s.running[d] for s in monitor.samples), default=0) for d in DEPLOYMENTS}
    finally:
        cluster.shutdown()
    return timeline


def refused_at_admission(answer: Any) -> bool:
    body = answer.body if isinstance(answer.body, dict) else {}
    return bool(answer.status == 503 and body.get("error", {}).get("code") == "overloaded")


def report(timeline: Timeline) -> str:
    lines = ["| event | s after load start |", "|---|---:|"]
    for name, t in timeline.events.items():
        lines.append(f"| {name} | {'—' if t is None else f'{t:.0f}'} |")
    peak = ", ".join(f"{d} {n}" for d, n in timeline.peak_running.items())
    lines.append("")
    lines.append(f"peak: {timeline.peak_workers} worker nodes; running replicas {peak}")
    lines.append("requests: " + ", ".join(f"{k} {v}" for k, v in timeline.requests.items()))
    if timeline.failures:
        lines.append(f"failures ({len(timeline.failures)}): {timeline.failures[:5]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    # `timeout` and CI end a run with SIGTERM: exit through the finally blocks that stop the cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16, help="client threads of the sustained load")
    parser.add_argument("--chars", type=int, default=2000, help="characters per document")
    parser.add_argument("--trickle-clients", type=int, default=2, help="client threads through the scale-down")
    parser.add_argument("--trickle-pause-s", type=float, default=2.0, help="each trickle client's pause")
    parser.add_argument("--max-load-s", type=float, default=150, help="longest sustained load")
    parser.add_argument("--idle-timeout-s", type=float, default=20, help="the autoscaler's idle timeout")
    parser.add_argument("--json", type=Path, help="also write the timeline and every sample here")
    options = parser.parse_args(argv)
    timeline = run(
        clients=options.clients,
        chars=options.chars,
        trickle_clients=options.trickle_clients,
        trickle_pause_s=options.trickle_pause_s,
        max_load_s=options.max_load_s,
        idle_timeout_s=options.idle_timeout_s,
    )
    print(report(timeline))
    if options.json:
        options.json.write_text(json.dumps(asdict(timeline), ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
