"""ONNX Runtime session construction."""

from __future__ import annotations

from pathlib import Path

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
