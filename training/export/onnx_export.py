"""torch → ONNX (emissions or logits only) and dynamic INT8 quantisation."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from training.export.layouts import Task

if TYPE_CHECKING:
    from training.export.modules import SequenceClassifier, TokenClassifierWithCrf

ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_OUTPUT = {"ner": "emissions", "sentiment": "logits"}
OPSET = 17


def export_onnx(
    module: TokenClassifierWithCrf | SequenceClassifier, task: Task, path: str | Path, *, opset: int = OPSET
) -> Path:
    """Trace ``module`` to ``path`` with dynamic batch and sequence axes.

    NER exports the emissions [B, T, K] only: ModelScope's own exporter traces its Python Viterbi loop
    into the graph, which fixes the loop length at trace time; decoding in numpy has no such limit.
    Uses the TorchScript-based exporter (``dynamo=False``): it needs no onnxscript and traces
    ``transformers`` BERT to a compact graph that ONNX Runtime's fusions recognise.
    """
    output = ONNX_OUTPUT[task]
    dummy = (
        torch.tensor([[101, 800, 801, 802, 102], [101, 803, 102, 0, 0]], dtype=torch.long),
        torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.long),
        torch.zeros(2, 5, dtype=torch.long),
    )
    vocab_size = module.encoder.config.vocab_size
    dummy = (dummy[0].clamp(max=vocab_size - 1), dummy[1], dummy[2])
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in ONNX_INPUTS}
    dynamic_axes[output] = {0: "batch", 1: "sequence"} if task == "ner" else {0: "batch"}
    target = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks
        torch.onnx.export(
            module.eval(),
            dummy,
            str(target),
            input_names=list(ONNX_INPUTS),
            output_names=[output],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return target


def quantize_int8(fp32_path: str | Path, int8_path: str | Path) -> Path:
    """Dynamic INT8 quantisation of the weights (QInt8), activations quantised at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    return Path(int8_path)
