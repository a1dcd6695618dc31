"""ONNX Runtime session construction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


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
    return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])


def run_rows(
    session: ort.InferenceSession,
    output: str,
    feeds_per_batch: list[dict[str, np.ndarray]],
) -> list[np.ndarray]:
    """Run ``session`` once per feed dict and return each call's ``output``."""
    return [session.run([output], feeds)[0] for feeds in feeds_per_batch]


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
