"""Single-sentence latency of exported model directories: FP32 vs INT8, 1 vs 2 intra-op threads.

    python -m training.export.bench runs/twins/ner runs/twins/sentiment

Needs directories exported with ``--keep-fp32`` (``model.fp32.onnx`` beside the INT8 ``model.onnx``).
All figures come from one run on one machine, so the ratios are comparable; absolute numbers
depend on the machine and whatever else it runs. Prints a table; never fails on slowness.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from deployments.runtime.model_dir import ModelDir
from deployments.runtime.tokenizer import BertChineseTokenizer
from training.export.samples import LATENCY_SENTENCE


def serving_session(path: Path, threads: int) -> ort.InferenceSession:
    """Configured as zhserve serves (sequential, all graph optimisations, no spinning)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def measure(session: ort.InferenceSession, feeds: dict, *, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        session.run(None, feeds)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feeds)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dirs", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)

    print(f"input: one sentence of {len(LATENCY_SENTENCE)} characters; {args.runs} runs after {args.warmup} warm-up")
    header = f"{'model':<28} {'weights':<6} {'threads':>7} {'file MiB':>9} {'p50 ms':>8} {'p90 ms':>8} {'mean ms':>8}"
    print(header)
    print("-" * len(header))
    for directory in args.model_dirs:
        model_dir = ModelDir.load(directory, verify_checksums=False)
        manifest = model_dir.manifest
        tokenizer = BertChineseTokenizer.from_vocab_file(model_dir.file(manifest.tokenizer.vocab))
        batch = tokenizer.encode_batch([LATENCY_SENTENCE], max_length=manifest.max_seq_length)
        feeds = batch.feeds(manifest.onnx.inputs)
        p50 = {}
        for weights, file in (("FP32", "model.fp32.onnx"), ("INT8", manifest.onnx.model)):
            path = model_dir.file(file)
            if not path.is_file():
                print(f"{directory.name:<28} {weights:<6} (no {file}; export with --keep-fp32)")
                continue
            for threads in (1, 2):
                session = serving_session(path, threads)
                timings = measure(session, feeds, warmup=args.warmup, runs=args.runs)
                del session
                p50[(weights, threads)] = statistics.median(timings)
                print(
                    f"{directory.name:<28} {weights:<6} {threads:>7} {path.stat().st_size / 2**20:>9.1f} "
                    f"{statistics.median(timings):>8.1f} "
                    f"{statistics.quantiles(timings, n=10)[-1]:>8.1f} {statistics.fmean(timings):>8.1f}"
                )
        for threads in (1, 2):
            if ("FP32", threads) in p50 and ("INT8", threads) in p50:
                ratio = p50[("INT8", threads)] / p50[("FP32", threads)]
                print(f"{'':<28} INT8/FP32 p50 at {threads} thread(s): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
