"""Short-text throughput and latency of /v1/analyze under concurrent clients (loopback only).

    .venv/bin/python load_tests/bench_throughput.py [--concurrency 1,8,32] [--seconds 20] [--batch-wait 0,0.005]

Sends corpus sentences (news and reviews from ../shared/data) from N concurrent clients for a
fixed time each, and prints requests per second and latency percentiles, measured in one run.
The services zhserve replaced topped out at 1.2 requests per second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from load_tests.local_service import corpus_sentences, deploy, local_service
from serve_app.config import EMBEDDED_NER_MODEL, EMBEDDED_SENTIMENT_MODEL


async def client(url: str, texts: list[str], start: int, stop_at: float, latencies: list[float]) -> int:
    errors = 0
    index = start
    async with httpx.AsyncClient(timeout=60) as http:
        while time.perf_counter() < stop_at:
            text = texts[index % len(texts)]
            index += 17
            started = time.perf_counter()
            response = await http.post(f"{url}/v1/analyze", json={"text": text})
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1
    return errors


async def run_level(url: str, texts: list[str], concurrency: int, seconds: float) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    started = time.perf_counter()
    stop_at = started + seconds
    errors = await asyncio.gather(*(client(url, texts, i, stop_at, latencies) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies, sum(errors)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument(
        "--batch-wait",
        default="0.005",
        help="comma-separated batch_wait_timeout_s values for both models, each measured in turn",
    )
    parser.add_argument("--ner-model", default=str(EMBEDDED_NER_MODEL))
    parser.add_argument("--sentiment-model", default=str(EMBEDDED_SENTIMENT_MODEL))
    options = parser.parse_args()
    sentences, source = corpus_sentences()
    texts = [s for s in sentences if 20 <= len(s) <= 120]
    levels = [int(c) for c in options.concurrency.split(",")]
    waits = [float(w) for w in options.batch_wait.split(",")]
    rows = []
    with local_service() as url:
        for wait in waits:
            batch = {"batch_wait_timeout_s": wait}
            deploy(
                url,
                {
                    "ner_model": options.ner_model,
                    "sentiment_model": options.sentiment_model,
                    "ner_config": batch,
                    "sentiment_config": batch,
                },
            )
            asyncio.run(run_level(url, texts, 2, 3))  # warm-up
            for concurrency in levels:
                qps, latencies, errors = asyncio.run(run_level(url, texts, concurrency, options.seconds))
                rows.append((wait, concurrency, qps, latencies, errors))
                print(
                    f"  batch wait {wait:g} s, concurrency {concurrency}: {qps:.1f} req/s", file=sys.stderr, flush=True
                )
    mean_chars = statistics.mean(len(t) for t in texts)
    print(f"\n/v1/analyze (NER + sentiment), {mean_chars:.0f}-character texts from {source}")
    print(
        f"{options.seconds:g} s per level; one local Ray cluster on {os.cpu_count()} cores; "
        "baseline (Flask services): 1.2 req/s\n"
    )
    header = (
        f"{'wait s':>6} | {'clients':>7} | {'req/s':>7} | {'vs 1.2':>7} | "
        f"{'p50 ms':>7} | {'p95 ms':>7} | {'p99 ms':>7} | errors"
    )
    print(header)
    print("-" * len(header))
    for wait, concurrency, qps, latencies, errors in rows:
        p50, p95, p99 = (percentile(latencies, q) * 1000 for q in (50, 95, 99))
        print(
            f"{wait:>6g} | {concurrency:>7} | {qps:>7.1f} | {qps / 1.2:>6.1f}x | "
            f"{p50:>7.1f} | {p95:>7.1f} | {p99:>7.1f} | {errors}"
        )


if __name__ == "__main__":
    main()
