"""A shipped encoder NER model directory back into a trainable state: the warm start of a continued fine-tune.

The shipped ``models/ner-e5`` keeps no FP32 checkpoint, only its INT8 graph (weights quantised per
tensor: ``w ≈ (q - zero_point) × scale``) and ``crf.npz``. :func:`tagger_state` rebuilds the tagger's
state dict from that graph: the float initialisers keep their parameter names; a quantised MatMul or
Gather weight is dequantised and put back where a fresh export of the same module puts it (torch
names a transposed Linear weight ``onnx::MatMul_N``, so the place is found by tracing an export of a
model with distinct random weights and matching values). What the dequantised start scores is
measured by its caller (the continued run's first evaluation).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from training.encoder.model import export_example
from training.onnx_io import export_onnx


def _placements(tagger: nn.Module, pad_id: int) -> dict[str, tuple[str, bool]]:
    """Initialiser name of a fresh FP32 export → (parameter name, stored transposed)."""
    params = {name: p.detach().numpy() for name, p in tagger.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.onnx"
        export_onnx(tagger, path, output_name="emissions", example=export_example(pad_id))
        graph = onnx.load(str(path)).graph
    places: dict[str, tuple[str, bool]] = {}
    for init in graph.initializer:
        value = numpy_helper.to_array(init)
        if init.name in params:
            places[init.name] = (init.name, False)
            continue
        for name, param in params.items():
            if param.shape == value.shape and np.array_equal(param, value):
                places[init.name] = (name, False)
                break
            if param.ndim == 2 and param.T.shape == value.shape and np.array_equal(param.T, value):
                places[init.name] = (name, True)
                break
    return places


def tagger_state(tagger: nn.Module, onnx_path: Path, *, pad_id: int) -> dict[str, torch.Tensor]:
    """The state dict of ``tagger`` (same architecture and vocabulary as the graph) read from the INT8 graph."""
    torch.manual_seed(0)
    with torch.no_grad():  # distinct values everywhere, so every traced initialiser matches one parameter
        for p in tagger.parameters():
            p.normal_()
    places = _placements(tagger, pad_id)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(onnx_path)).graph.initializer}
    state: dict[str, torch.Tensor] = {}
    for traced, (name, transposed) in places.items():
        if traced in inits:
            value = inits[traced].astype(np.float32)
        elif f"{traced}_quantized" in inits:
            q = inits[f"{traced}_quantized"].astype(np.float32)
            value = (q - inits[f"{traced}_zero_point"].astype(np.float32)) * inits[f"{traced}_scale"].astype(np.float32)
        else:
            raise ValueError(f"{onnx_path}: no initialiser for {traced} ({name})")
        state[name] = torch.from_numpy(np.ascontiguousarray(value.T if transposed else value))
    missing = set(tagger.state_dict()) - set(state)
    if missing:
        raise ValueError(f"{onnx_path}: parameters not found in the graph: {sorted(missing)}")
    return state


def crf_state(crf_path: Path) -> dict[str, torch.Tensor]:
    """``crf.npz`` (effective parameters) as the CRF's parameters (forbidden moves stay pinned by its buffers)."""
    arrays = np.load(crf_path)
    return {key: torch.from_numpy(arrays[key].astype(np.float32)) for key in arrays.files}
