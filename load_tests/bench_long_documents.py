"""Long documents end to end: wall time and characters per second at 1k–200k characters,
batched (sentences sent in groups of 16, @serve.batch max_batch_size 16) vs unbatched (one sentence
per call, max_batch_size 1), measured side by side in one run.

    .venv/bin/python load_tests/bench_long_documents.py [--sizes 1000,10000,...] [--repeats 2]

Documents are built by concatenating corpus sentences (news and reviews, interleaved) from
../shared/data. Each figure is the median of --repeats requests to /v1/analyze (both tasks).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from load_tests.local_service import corpus_sentences, deploy, local_service
from serve_app.config import EMBEDDED_NER_MODEL, EMBEDDED_SENTIMENT_MODEL


def build_document(sentences: list[str], chars: int, offset: int) -> str:
    parts, total, index = [], 0, offset
    while total < chars:
        sentence = sentences[index % len(sentences)]
        parts.append(sentence)
        total += len(sentence)
        index += 7919  # a stride through the corpus mixes news and reviews
    return "".join(parts)[:chars]


def time_request(url: str, text: str) -> float:
    started = time.perf_counter()
    response = httpx.post(f"{url}/v1/analyze", json={"text": text}, timeout=600)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,50000,100000,200000")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ner-model", default=str(EMBEDDED_NER_MODEL))
    parser.add_argument("--sentiment-model", default=str(EMBEDDED_SENTIMENT_MODEL))
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes.split(",")]
    sentences, source = corpus_sentences()
    documents = {size: build_document(sentences, size, offset=size) for size in sizes}
    # batched: the ingress sends sentences in groups of 16 and @serve.batch pools up to 16 groups;
    # unbatched: one sentence per handle call and one call per model invocation.
    modes = {"batched": 16, "unbatched": 1}
    results: dict[str, dict[int, float]] = {mode: {} for mode in modes}
    with local_service() as url:
        for mode, batch_size in modes.items():
            batch = {"max_batch_size": batch_size, "batch_wait_timeout_s": 0.005}
            deploy(
                url,
                {
                    "ner_model": options.ner_model,
                    "sentiment_model": options.sentiment_model,
                    "ner_config": batch,
                    "sentiment_config": batch,
                    "ingress_config": {"window_group_size": batch_size, "request_timeout_s": 900},
                },
            )
            time_request(url, documents[sizes[0]])  # warm-up
            for size in sizes:
                results[mode][size] = statistics.median(
                    time_request(url, documents[size]) for _ in range(options.repeats)
                )
                print(f"  {mode:9s} {size:>7,} chars: {results[mode][size]:.2f} s", file=sys.stderr, flush=True)
    print(f"\nLong documents through /v1/analyze (NER + sentiment), documents from {source}")
    print(f"median of {options.repeats} requests; one local Ray cluster on {os.cpu_count()} cores\n")
    header = f"{'chars':>8} | {'batched s':>9} | {'chars/s':>8} | {'unbatched s':>11} | {'chars/s':>8} | speed-up"
    print(header)
    print("-" * len(header))
    for size in sizes:
        batched, unbatched = results["batched"][size], results["unbatched"][size]
        print(
            f"{size:>8,} | {batched:>9.2f} | {size / batched:>8,.0f} | {unbatched:>11.2f} | "
            f"{size / unbatched:>8,.0f} | {unbatched / batched:>7.2f}x"
        )


if __name__ == "__main__":
    main()
