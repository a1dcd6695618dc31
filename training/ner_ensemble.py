"""Two NER tiers as one model directory: a product of experts of their CRFs, in one ONNX graph.

A linear-chain CRF scores a tag path as the sum of its emissions and transitions. The weighted sum of
two such scores, ``w·s_a(y) + (1-w)·s_b(y)``, is again a linear-chain CRF score: emissions
``w·e_a + (1-w)·e_b``, transitions ``w·T_a + (1-w)·T_b``. So the ensemble decodes the path both tiers
agree on best (a geometric mixture of their path distributions) with the runtime's own CRF decoder,
and needs no serving code of its own — provided both graphs read the same token sequence.

They do, through the first model's tokenizer: the e5 tier's tokenizer makes every character its own
piece, so each of its piece ids maps to the CNN's id of the same character (its WordPiece vocabulary
has a token per character it knows; others map to ``[UNK]``), and ``<s>``/``</s>``/``<pad>`` map to
``[CLS]``/``[SEP]``/``[PAD]``. The map is a ``Gather`` at the head of the CNN's half of the merged graph.
The CNN then reads digits and Latin letters one character at a time instead of as WordPieces: what
that costs is in the ensemble's measured scores.

No Ray and no torch here: ONNX graph surgery over two shipped model directories.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper
from tokenizers import Tokenizer as HfTokenizer

from deployments.runtime.crf import CrfParams
from deployments.runtime.model_dir import Manifest, ModelDir
from deployments.runtime.tokenizer import BertChineseTokenizer
from training.ship import staged_model_dir, write_model_dir

SPECIAL_MAP = {"<s>": "[CLS]", "</s>": "[SEP]", "<pad>": "[PAD]", "<unk>": "[UNK]"}


def id_map(char_tokenizer: HfTokenizer, wordpiece: BertChineseTokenizer) -> tuple[np.ndarray, dict[str, int]]:
    """For every piece id of ``char_tokenizer``: the WordPiece id of the same character (``[UNK]`` when
    the piece is not one character the WordPiece vocabulary knows). Also how many pieces mapped how."""
    vocab = wordpiece.vocab
    size = char_tokenizer.get_vocab_size()
    table = np.full(size, vocab["[UNK]"], dtype=np.int64)
    counts = {"special": 0, "character": 0, "unknown": 0}
    for piece_id in range(size):
        piece = char_tokenizer.id_to_token(piece_id) or ""
        if piece in SPECIAL_MAP:
            table[piece_id] = vocab[SPECIAL_MAP[piece]]
            counts["special"] += 1
            continue
        (encoded,) = wordpiece.encode([piece])
        if len(piece) == 1 and len(encoded.ids) == 1 and int(encoded.ids[0]) != vocab["[UNK]"]:
            table[piece_id] = int(encoded.ids[0])
            counts["character"] += 1
        else:
            counts["unknown"] += 1
    return table, counts


def merged_graph(first: onnx.ModelProto, second: onnx.ModelProto, table: np.ndarray, weight: float) -> onnx.ModelProto:
    """One graph: ``input_ids`` (the first model's ids), ``attention_mask`` → ``emissions`` =
    ``weight``·first + (1-weight)·second, the second reading ``table[input_ids]``."""
    a = compose.add_prefix(first, "a/")
    b = compose.add_prefix(second, "b/")
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    out = helper.make_tensor_value_info("emissions", TensorProto.FLOAT, ["batch", "sequence", len_tags(first)])
    nodes = [
        helper.make_node("Identity", ["input_ids"], ["a/input_ids"]),
        helper.make_node("Identity", ["attention_mask"], ["a/attention_mask"]),
        helper.make_node("Gather", ["ensemble/id_map", "input_ids"], ["b/input_ids"], axis=0),
        helper.make_node("Identity", ["attention_mask"], ["b/attention_mask"]),
        *a.graph.node,
        *b.graph.node,
        helper.make_node("Mul", ["a/emissions", "ensemble/weight_a"], ["ensemble/a"]),
        helper.make_node("Mul", ["b/emissions", "ensemble/weight_b"], ["ensemble/b"]),
        helper.make_node("Add", ["ensemble/a", "ensemble/b"], ["emissions"]),
    ]
    initializers = [
        *a.graph.initializer,
        *b.graph.initializer,
        numpy_helper.from_array(table, "ensemble/id_map"),
        numpy_helper.from_array(np.asarray(weight, dtype=np.float32), "ensemble/weight_a"),
        numpy_helper.from_array(np.asarray(1.0 - weight, dtype=np.float32), "ensemble/weight_b"),
    ]
    graph = helper.make_graph(nodes, "ner_ensemble", [ids, mask], [out], initializer=initializers)
    opsets: dict[str, int] = {}
    for model in (first, second):
        for opset in model.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    merged = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    merged.ir_version = max(first.ir_version, second.ir_version)
    onnx.checker.check_model(merged)
    return merged


def len_tags(model: onnx.ModelProto) -> int:
    dims = model.graph.output[0].type.tensor_type.shape.dim
    return int(dims[-1].dim_value)


def combined_crf(first: CrfParams, second: CrfParams, weight: float) -> dict[str, np.ndarray]:
    """The CRF of the weighted sum of two CRF scores (a forbidden move stays far below every allowed one)."""
    return {
        name: (weight * getattr(first, name) + (1.0 - weight) * getattr(second, name)).astype(np.float32)
        for name in ("start_transitions", "end_transitions", "transitions")
    }


def build(
    first_dir: Path,
    second_dir: Path,
    model_dir: Path,
    *,
    weight: float,
    name: str = "zhserve-ner-ensemble",
    version: str,
    log: Callable[[str], None] = print,
) -> Manifest:
    """The ensemble model directory of ``first_dir`` (its tokenizer, which must give every character its own
    piece) and ``second_dir`` (a WordPiece model), ``weight`` on the first."""
    first, second = ModelDir.load(first_dir), ModelDir.load(second_dir)
    fm, sm = first.manifest, second.manifest
    if fm.labels != sm.labels or fm.decoder != "crf" or sm.decoder != "crf" or fm.crf is None or sm.crf is None:
        raise ValueError("both members must be CRF taggers over the same labels")
    if fm.tokenizer.type != "tokenizers-json" or sm.tokenizer.type != "wordpiece":
        raise ValueError("the first member must read tokenizers-json pieces, the second WordPiece")
    char_tokenizer = HfTokenizer.from_file(str(first.file(fm.tokenizer.file)))
    wordpiece = BertChineseTokenizer.from_vocab_file(second.file(sm.tokenizer.vocab), lowercase=sm.tokenizer.lowercase)
    table, counts = id_map(char_tokenizer, wordpiece)
    log(f"id map: {counts}")
    graph = merged_graph(
        onnx.load(str(first.file(fm.onnx.model))), onnx.load(str(second.file(sm.onnx.model))), table, weight
    )
    crf = combined_crf(CrfParams.load(first.file(fm.crf)), CrfParams.load(second.file(sm.crf)), weight)
    manifest = fm.model_copy(
        update={
            "name": name,
            "version": version,
            "architecture": f"product of experts of two CRF taggers in one graph: {weight:g} × {fm.name} "
            f"{fm.version} + {1 - weight:g} × {sm.name} {sm.version} (emissions and transitions), the second "
            f"reading the first's character pieces through an id map ({counts['character']:,} characters)",
            "max_seq_length": min(fm.max_seq_length, sm.max_seq_length),
            "provenance": {
                "source": "ensemble",
                "training": "zhserve-train ner-ensemble (training/ner_ensemble.py): no training, graph surgery",
                "weight_first": weight,
                "members": [
                    {"name": m.name, "version": m.version, "files": m.files, "provenance": m.provenance}
                    for m in (fm, sm)
                ],
                "id_map": counts,
            },
        }
    )
    with tempfile.TemporaryDirectory() as tmp, staged_model_dir(model_dir) as staged:
        graph_path = Path(tmp) / "model.onnx"
        onnx.save(graph, str(graph_path))
        return write_model_dir(
            staged,
            manifest,
            files={"model.onnx": graph_path, fm.tokenizer.file: first.file(fm.tokenizer.file)},
            crf=crf,
        )
