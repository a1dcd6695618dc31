"""ONNX export, INT8 dynamic quantisation and ONNX Runtime inference for the trained networks."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from deployments.runtime.tokenizer import BertChineseTokenizer

INPUT_NAMES = ["input_ids", "attention_mask"]


def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    *,
    output_name: str,
    example: tuple[torch.Tensor, torch.Tensor] | None = None,
    opset: int = 17,
) -> None:
    """FP32 ONNX with dynamic batch and sequence axes, inputs ``input_ids``/``attention_mask`` int64; a per-token
    output (``emissions``) keeps its sequence axis dynamic too.

    ``example`` is the ``(input_ids, attention_mask)`` the graph is traced with; the default is a padded
    BERT-Chinese pair ([CLS] 2, [SEP] 3, [PAD] 0): a vocabulary with other special ids passes its own.
    """
    model.eval()
    if example is None:
        ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]], dtype=torch.int64)
        example = (ids, (ids != 0).to(torch.int64))
    axes = {0: "batch", 1: "sequence"}
    output_axes = {0: "batch", 1: "sequence"} if output_name == "emissions" else {0: "batch"}
    torch.onnx.export(
        model,
        example,
        str(path),
        input_names=INPUT_NAMES,
        output_names=[output_name],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, output_name: output_axes},
        opset_version=opset,
        dynamo=False,
    )
    onnx.checker.check_model(onnx.load(str(path)))


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, *, op_types: Sequence[str] = ("Gather",)) -> None:
    """INT8 dynamic quantisation (``quantize_dynamic``, QInt8 weights) of the ``op_types`` nodes.

    The CNN recipes quantise the Gather (embedding-table) weights only: the tables are > 90 % of the
    parameters, so this gives nearly all of the size reduction. MatMuls stay FP32 there on purpose: dynamic
    MatMul quantisation picks one activation scale per tensor per call, which makes a text's output depend
    on the other texts in its batch (measured: emissions moved by up to 0.13). Weight-only Gather
    quantisation keeps every text's output independent of the batch, as FP32 is. The encoder recipes
    quantise ``("MatMul", "Gather")`` (their weights are in the MatMuls) and are served one row per call.
    """
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model.onnx"
        shutil.copy(fp32_path, staged)
        quantize_dynamic(
            staged,
            Path(int8_path),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(op_types),
            per_channel=False,
        )


def session(path: str | Path, *, threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads and one inter-op thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_texts(
    sess: ort.InferenceSession,
    tokenizer: BertChineseTokenizer,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int = 64,
) -> list[np.ndarray]:
    """The model output for each text (``[T, K]`` emissions incl. [CLS]/[SEP], or ``[num_labels]`` logits).

    Texts are batched in length order to keep padding small; each result is trimmed to its length.
    """
    lengths = tokenizer.count_tokens(texts)
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    outputs: list[np.ndarray] = [np.empty(0)] * len(texts)
    for begin in range(0, len(order), batch_size):
        chunk = order[begin : begin + batch_size]
        batch = tokenizer.encode_batch([texts[i] for i in chunk], max_length=max_length)
        (result,) = sess.run(None, batch.feeds(INPUT_NAMES))
        for row, index in enumerate(chunk):
            outputs[index] = result[row, : lengths[index] + 2] if result.ndim == 3 else result[row]
    return outputs
