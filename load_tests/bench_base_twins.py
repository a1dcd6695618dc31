"""Production-size models without the hub: BERT-base "shape twins" (random weights, RaNER /
StructBERT layout, 21,128-token vocabulary) through the real export path, then served.

    .venv/bin/python load_tests/bench_base_twins.py [--work runs/twins] [--document-chars 20000]

Prints, from one run on this machine: twin build and export time per task, FP32 and INT8 ONNX
sizes, one-sentence latency FP32 vs INT8 (training.export.bench), and each served replica's
resident memory idle and after one long document, against the memory budget that
serve_config.base.yaml gives base-size replicas. Needs the [export] extra (torch). Never fails on
slowness; figures depend on the machine and on whatever else it runs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from load_tests.local_service import REPO_ROOT, corpus_sentences, deploy, local_service

TASKS = ("ner", "sentiment")
DEPLOYMENTS = {"ner": "NER", "sentiment": "Sentiment"}


def export_twins(work: Path) -> dict[str, Path]:
    from training.export.exporter import export_model
    from training.export.twin import build_twin

    print(f"{'task':<10} {'build s':>8} {'export s':>9} {'FP32 MiB':>9} {'INT8 MiB':>9} {'INT8/FP32':>10}")
    exported = {}
    for task in TASKS:
        source, out = work / f"{task}-src", work / task
        for path in (source, out):
            shutil.rmtree(path, ignore_errors=True)
        started = time.perf_counter()
        build_twin(task, "base", source)  # type: ignore[arg-type]
        built = time.perf_counter() - started
        started = time.perf_counter()
        export_model(task, source, out, keep_fp32=True)  # type: ignore[arg-type]
        exported_s = time.perf_counter() - started
        fp32, int8 = (out / "model.fp32.onnx").stat().st_size / 2**20, (out / "model.onnx").stat().st_size / 2**20
        print(f"{task:<10} {built:>8.1f} {exported_s:>9.1f} {fp32:>9.1f} {int8:>9.1f} {int8 / fp32:>10.2f}")
        exported[task] = out
    return exported


def served_memory(exported: dict[str, Path], document_chars: int, budget_mb: int) -> None:
    from ray import serve

    sentences, _ = corpus_sentences()
    document = "".join(sentences[::7])[:document_chars]
    budget = {"memory_limit_mb": budget_mb}
    args = {
        "ner_model": str(exported["ner"]),
        "sentiment_model": str(exported["sentiment"]),
        "ner_config": budget,
        "sentiment_config": budget,
    }
    with local_service() as url:
        deploy(url, args)
        handles = {task: serve.get_deployment_handle(DEPLOYMENTS[task], app_name="zhserve") for task in TASKS}
        idle = {task: handles[task].stats.remote().result(timeout_s=60).rss_bytes for task in TASKS}
        started = time.perf_counter()
        response = httpx.post(f"{url}/v1/analyze", json={"text": document}, timeout=900)
        response.raise_for_status()
        elapsed = time.perf_counter() - started
        after = {task: handles[task].stats.remote().result(timeout_s=60).rss_bytes for task in TASKS}
    print(f"\nserved (1 replica each, memory_limit_mb {budget_mb}); one {len(document):,}-character document "
          f"through /v1/analyze in {elapsed:.1f} s")  # fmt: skip
    print(f"{'task':<10} {'idle RSS MiB':>13} {'after MiB':>10} {'of budget':>10}")
    for task in TASKS:
        print(f"{task:<10} {idle[task] / 2**20:>13.0f} {after[task] / 2**20:>10.0f} "
              f"{after[task] / 2**20 / budget_mb:>10.0%}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "twins")
    parser.add_argument("--document-chars", type=int, default=20_000)
    parser.add_argument("--budget-mb", type=int, default=2048, help="serve_config.base.yaml's memory_limit_mb")
    args = parser.parse_args()

    from training.export import bench

    exported = export_twins(args.work)
    print()
    bench.main([str(exported[task]) for task in TASKS])
    served_memory(exported, args.document_chars, args.budget_mb)


if __name__ == "__main__":
    main()
