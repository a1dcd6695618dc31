"""Sustained long documents: do requests finish? Completions per minute beside what the model core
computes in the same time, their latency, the time to a 503, a short request's latency in the mix.

    .venv/bin/python load_tests/sustained.py [--size base|embedded] [--clients 32] [--chars 5000]
        [--seconds 150] [--work DIR] [--out FILE.md]

zhserve is started as ``make run`` starts it (at ``--size base`` on the BERT-base INT8 shape twins
that ``load_tests/bench.py`` builds: random weights, the real architecture). ``--clients`` threads
send ``--chars``-character documents to ``/v1/analyze`` for ``--seconds``; a refused client waits
the Retry-After it was given (as a well-behaved client does), capped at the time left. A prober
sends one short sentence every second throughout. Then the model core alone, in process
(2 processes × 1 thread, the same documents planned by the same planner, windows in calls of 16):
how many documents per minute the models themselves can compute. A script: it asserts nothing.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load_tests.bench import REPO_ROOT, SENTENCES, Report, base_twins, start_zhserve, stop_zhserve
from load_tests.burst import document


@dataclass
class Sustained:
    seconds: float = 0.0
    completed_s: list[float] = field(default_factory=list)  # latency of each 200
    refused_s: list[float] = field(default_factory=list)  # time to each 503
    statuses: Counter[str] = field(default_factory=Counter)
    short_s: list[float] = field(default_factory=list)
    short_statuses: Counter[str] = field(default_factory=Counter)


def spread(values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    if not values:
        return "–"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered) * scale:.2f} / p99 {p99 * scale:.2f} / max {ordered[-1] * scale:.2f} {unit}"
    )


def run_load(url: str, clients: int, chars: int, seconds: float, timeout_s: float = 180) -> Sustained:
    result = Sustained()
    text = document(chars)
    lock = threading.Lock()
    began = time.monotonic()
    deadline = began + seconds

    def client() -> None:
        with httpx.Client(timeout=timeout_s) as http:
            while time.monotonic() < deadline:
                sent = time.monotonic()
                try:
                    response = http.post(f"{url}/v1/analyze", json={"text": text})
                except httpx.HTTPError as exc:
                    with lock:
                        result.statuses[type(exc).__name__] += 1
                    continue
                elapsed = time.monotonic() - sent
                code = response.json().get("error", {}).get("code", "") if response.status_code != 200 else ""
                with lock:
                    result.statuses[f"{response.status_code} {code}".strip()] += 1
                    if response.status_code == 200:
                        result.completed_s.append(elapsed)
                    elif response.status_code == 503:
                        result.refused_s.append(elapsed)
                if response.status_code == 503:
                    wait = float(response.headers.get("retry-after", "1"))
                    time.sleep(max(0.0, min(wait, deadline - time.monotonic())))

    def prober() -> None:
        with httpx.Client(timeout=timeout_s) as http:
            while time.monotonic() < deadline:
                sent = time.monotonic()
                try:
                    response = http.post(f"{url}/v1/analyze", json={"text": SENTENCES[0]})
                    status = str(response.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with lock:
                    result.short_statuses[status] += 1
                    if status == "200":
                        result.short_s.append(time.monotonic() - sent)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - sent)))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    threads.append(threading.Thread(target=prober, daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + timeout_s + 10)
    result.seconds = time.monotonic() - began
    return result


def _core_worker(ner_dir: str, sentiment_dir: str, text: str, seconds: float, queue: Any) -> None:
    from deployments.runtime.ner import NerModel
    from deployments.runtime.sentiment import SentimentModel
    from serve_app.plan import Planner, PlanSettings, ServedModel

    ner = NerModel.from_model_dir(ner_dir, intra_op_threads=1)
    sentiment = SentimentModel.from_model_dir(sentiment_dir, intra_op_threads=1)
    planner = Planner({"ner": ServedModel.from_dir(ner_dir), "sentiment": ServedModel.from_dir(sentiment_dir)})
    documents, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        plan = planner.plan(text, ["ner", "sentiment"], PlanSettings())
        for task, model in (("ner", ner), ("sentiment", sentiment)):
            rows = plan.tasks[task].rows()  # type: ignore[index]
            for start in range(0, len(rows), 16):
                if task == "ner":
                    ner.tag(rows[start : start + 16])
                else:
                    model.probabilities_of_rows(rows[start : start + 16])  # type: ignore[union-attr]
        documents += 1
    queue.put(documents / (time.perf_counter() - began))


def core_documents_per_minute(ner_dir: Path, sentiment_dir: Path, text: str, seconds: float) -> float:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    args = (str(ner_dir), str(sentiment_dir), text, seconds, queue)
    workers = [context.Process(target=_core_worker, args=args) for _ in range(2)]
    for worker in workers:
        worker.start()
    rates = [queue.get(timeout=seconds + 600) for _ in workers]
    for worker in workers:
        worker.join()
    return sum(rates) * 60


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["base", "embedded"], default="base")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--chars", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--core-seconds", type=float, default=60)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (reuses twins built there)")
    parser.add_argument("--label", default="")
    parser.add_argument("--override", action="append", default=[], help="serve config override (bench.py syntax)")
    parser.add_argument("--out", type=Path)
    options = parser.parse_args(argv)
    work = options.work or Path(tempfile.mkdtemp(prefix="zhserve-sustained-"))
    work.mkdir(parents=True, exist_ok=True)
    if options.size == "base":
        dirs, _ = base_twins(work)
        ner_dir, sentiment_dir = dirs["ner"], dirs["sentiment"]
        args: dict[str, Any] | None = {"ner_model": str(ner_dir), "sentiment_model": str(sentiment_dir)}
        overrides = ["NER.user_config.memory_limit_mb=2048", "Sentiment.user_config.memory_limit_mb=2048"]
    else:
        ner_dir, sentiment_dir = REPO_ROOT / "models" / "ner", REPO_ROOT / "models" / "sentiment-e5"
        args, overrides = None, []
    text = document(options.chars)
    core = core_documents_per_minute(ner_dir, sentiment_dir, text, options.core_seconds)
    print(f"model core in process: {core:.1f} documents of {options.chars:,} characters per minute", flush=True)
    service = start_zhserve(
        "zhserve-sustained", work, args=args, overrides=[*overrides, *options.override], golden=options.size != "base"
    )
    try:
        result = run_load(service.url, options.clients, options.chars, options.seconds)
    finally:
        stop_zhserve(service)
    completed_per_min = len(result.completed_s) / result.seconds * 60
    timeouts = sum(n for status, n in result.statuses.items() if status.startswith("504"))
    report = Report()
    report.table(
        f"Sustained long documents ({options.size} size{', ' + options.label if options.label else ''})",
        ["what", "measured"],
        [
            [
                "load",
                f"{options.clients} clients × {options.chars:,}-character documents to /v1/analyze, "
                f"{result.seconds:.0f} s; a refused client waits its Retry-After",
            ],
            ["completed documents per minute", f"{completed_per_min:.1f}"],
            ["model core alone (in process), documents per minute", f"{core:.1f}"],
            ["completed / model core", f"{completed_per_min / core:.0%}" if core else "–"],
            ["latency of completed documents", spread(result.completed_s)],
            ["admitted requests that timed out (504)", str(timeouts)],
            ["time to a 503", spread(result.refused_s)],
            ["answers by status", ", ".join(f"{status}: {n:,}" for status, n in result.statuses.most_common())],
            ["a short sentence every second, latency", spread(result.short_s, "ms", 1000)],
            ["the short sentences by status", ", ".join(f"{s}: {n}" for s, n in result.short_statuses.most_common())],
        ],
    )
    if options.out:
        with open(options.out, "a", encoding="utf-8") as handle:
            handle.write("\n".join(report.lines) + "\n")


if __name__ == "__main__":
    main()
