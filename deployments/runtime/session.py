"""ONNX Runtime session construction."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from deployments.runtime.tokenizer import NUM_SPECIAL_PER_SEQUENCE

DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]
"""Graph rewrites left out. ONNX Runtime fuses a residual Add + LayerNormalization into its
SkipLayerNormalization kernel, which on CPU is slower than the two ops it replaces: measured with
ONNX Runtime 1.32, one thread, the 8 benchmark sentences, leaving it out runs every transformer
model 10-17 % faster (e5 sentiment and NER, BERT-base twins; batch 1 and 16) and changes nothing
for the CNN models, which have no such pattern. Answers agree to float rounding."""


def create_session(
    model_path: str | Path, *, intra_op_threads: int = 1, inter_op_threads: int = 1
) -> ort.InferenceSession:
    """A CPU inference session with explicit thread counts.

    Thread counts must match the CPUs the replica was given: ONNX Runtime otherwise sizes its pool
    to every core of the machine, and several replicas on one node then fight over them.
    """
    if intra_op_threads < 1 or inter_op_threads < 1:
        raise ValueError(f"thread counts must be >= 1, got intra_op={intra_op_threads}, inter_op={inter_op_threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn a core between batches; replicas share nodes, so let them sleep.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The CPU memory arena stays on (the default): a call's activations come from it and it keeps
    # them for the next call, so resident memory stays at the largest call computed and grows
    # only when a larger one comes (the replica's memory budget counts on this, see
    # deployments/memory.py). Measured with ONNX Runtime 1.32 after a call of 2 rows x 510 tokens
    # in flight (e5 sentiment, row_threads 2): +61 MiB with the arena, +247 MiB peak without it
    # (glibc's per-thread heaps, which it did not give back: +375 MiB after the next calls); the
    # CNN NER, 64 x 254 padded tokens: +56 MiB with it, +143 MiB peak without.
    return ort.InferenceSession(
        str(model_path),
        sess_options=options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=DISABLED_OPTIMIZERS,
    )


def row_executor(row_threads: int) -> ThreadPoolExecutor | None:
    """Threads that run the rows of a row-by-row model's batch at the same time (``None``: one at a
    time on the caller's thread).

    A row-by-row model (see ``needs_row_by_row``) runs each row as its own ONNX call; the calls are
    independent and ONNX Runtime releases the GIL while it computes, so ``row_threads`` calls can
    run at once on ``row_threads`` cores, each on one intra-op thread. Unlike more intra-op
    threads, which split every small operator of a short row across cores and wait for them
    (measured slower), this keeps each call on one core. Models run as padded batches ignore it.
    """
    if row_threads < 1:
        raise ValueError(f"row_threads must be >= 1, got {row_threads}")
    return ThreadPoolExecutor(row_threads, thread_name_prefix="onnx-rows") if row_threads > 1 else None


def run_rows(
    session: ort.InferenceSession,
    output: str,
    feeds_per_batch: list[dict[str, np.ndarray]],
    executor: ThreadPoolExecutor | None = None,
) -> list[np.ndarray]:
    """Run ``session`` once per feed dict and return each call's ``output``, in order; on
    ``executor``'s threads at once when one is given (``InferenceSession.run`` is thread-safe)."""
    if executor is None or len(feeds_per_batch) < 2:
        return [session.run([output], feeds)[0] for feeds in feeds_per_batch]
    return list(executor.map(lambda feeds: session.run([output], feeds)[0], feeds_per_batch))


def tokens_in_flight(lengths: Sequence[int], *, row_by_row: bool, row_threads: int = 1) -> int:
    """Padded positions whose activations are in memory at once while rows of these token counts
    are computed: every row at the longest row's width for a padded batch; for a row-by-row model,
    ``row_threads`` rows at a time, each at most the longest row's width."""
    if not lengths:
        return 0
    width = max(lengths) + NUM_SPECIAL_PER_SEQUENCE
    rows = min(len(lengths), row_threads) if row_by_row else len(lengths)
    return rows * width


def needs_row_by_row(quantization: str) -> bool:
    """Whether rows must be run one per call for batch-independent results.

    Dynamic INT8 quantisation computes each activation's scale over the *whole* input tensor,
    i.e. over every row of a batch: a text's output would then depend on what it was batched
    with (measured: 6 of 407 sentences changed an entity). Run alone, each row is quantised on
    its own and needs no padding; Serve-level batching still amortises the per-request cost.
    ``int8-weight-only`` models (INT8 weights, FP32 activations) and FP32 models run as padded
    batches: their padded positions are masked, so a row's output is its own.
    """
    return quantization == "int8-dynamic"
