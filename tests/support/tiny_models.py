"""Tiny but real model directories for tests: ONNX graphs built with onnx.helper (no torch).

The graph is an embedding lookup followed by a linear layer — enough to exercise tokenisation,
ONNX Runtime, decoding and the manifest end to end, with weights chosen so outputs are known.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deployments.runtime.model_dir import Manifest, OnnxSpec, TokenizerSpec, write_manifest
from deployments.runtime.tokenizer import SPECIAL_TOKENS

NER_TAGS = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC",
            "B-ORG", "I-ORG", "E-ORG", "S-ORG"]  # fmt: skip


def write_vocab(path: Path, tokens: Sequence[str]) -> list[str]:
    vocab = list(SPECIAL_TOKENS) + [t for t in dict.fromkeys(tokens) if t not in SPECIAL_TOKENS]
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return vocab


def _save_linear_graph(path: Path, table: np.ndarray, output: str, pooled: bool) -> None:
    """input_ids → Gather(table) → (mean over sequence if pooled) → ``output``."""
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["gathered"])]
    if pooled:
        # Masked mean over the sequence: sum(mask * x) / sum(mask)
        nodes += [
            helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["mask_f", "axis2"], ["mask_3d"]),
            helper.make_node("Mul", ["gathered", "mask_3d"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
            helper.make_node("ReduceSum", ["mask_3d", "axis1"], ["count"], keepdims=0),
            helper.make_node("Div", ["summed", "count"], [output]),
        ]
        out_shape = ["batch", table.shape[1]]
    else:
        nodes += [helper.make_node("Identity", ["gathered"], [output])]
        out_shape = ["batch", "seq", table.shape[1]]
    graph = helper.make_graph(
        nodes,
        "tiny",
        inputs=[
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        outputs=[helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(table.astype(np.float32), "table")]
        + (
            [
                numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
                numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
            ]
            if pooled
            else []
        ),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


# The special tokens of an XLM-R / SentencePiece vocabulary, in its id order.
JSON_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")


def write_tokenizer_json(path: Path, tokens: Sequence[str]) -> list[str]:
    """A ``tokenizers`` serialisation in the shape of a pretrained encoder's: XLM-R special
    tokens (pad id 1), every non-space character its own token, unknown ones ``<unk>``."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    vocab = list(JSON_SPECIAL_TOKENS) + [t for t in dict.fromkeys(tokens) if t not in JSON_SPECIAL_TOKENS]
    tokenizer = Tokenizer(models.WordLevel({token: index for index, token in enumerate(vocab)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")]
    )
    tokenizer.save(str(path))
    return vocab


def build_tiny_ner(
    root: Path, lexicon: dict[str, str], *, extra_chars: str = "", crf: bool = True, tokenizer_json: bool = False
) -> Path:
    """An NER directory that tags each character of ``lexicon``'s words with its type (BIOES).

    Emissions favour, for every character, the tag it has in the lexicon (single-char words get
    S-, first B-, last E-, middle I-); other tokens favour O. With a CRF whose transitions forbid
    invalid BIOES moves, decoding recovers exactly the lexicon's words where they stand alone.
    ``tokenizer_json`` writes a ``tokenizer.json`` with XLM-R special tokens instead of a
    WordPiece ``vocab.txt`` (the layout of a pretrained-encoder model directory).
    """
    root.mkdir(parents=True, exist_ok=True)
    chars = list(dict.fromkeys("".join(lexicon) + extra_chars))
    if tokenizer_json:
        vocab = write_tokenizer_json(root / "tokenizer.json", chars)
        tokenizer = TokenizerSpec(type="tokenizers-json", file="tokenizer.json", cls_token="<s>", sep_token="</s>",
                                  pad_token="<pad>")  # fmt: skip
    else:
        vocab = write_vocab(root / "vocab.txt", [*chars, "ab", "##c", "12", "##3"])
        tokenizer = TokenizerSpec(vocab="vocab.txt", lowercase=True)
    table = np.zeros((len(vocab), len(NER_TAGS)), dtype=np.float32)
    table[:, 0] = 2.0
    for word, label in lexicon.items():
        for position, char in enumerate(word):
            if len(word) == 1:
                prefix = "S"
            elif position == 0:
                prefix = "B"
            elif position == len(word) - 1:
                prefix = "E"
            else:
                prefix = "I"
            row = vocab.index(char)
            table[row, :] = 0.0
            table[row, NER_TAGS.index(f"{prefix}-{label}")] = 4.0
    _save_linear_graph(root / "model.onnx", table, "emissions", pooled=False)
    manifest = Manifest(
        name="tiny-ner",
        version="0.0.1",
        task="ner",
        architecture="embedding lookup (test fixture)",
        labels=NER_TAGS,
        tag_scheme="BIOES",
        decoder="crf" if crf else "argmax",
        crf="crf.npz" if crf else None,
        max_seq_length=32,
        tokenizer=tokenizer,
        onnx=OnnxSpec(model="model.onnx", inputs=["input_ids", "attention_mask"], output="emissions"),
        provenance={"source": "test fixture"},
    )
    if crf:
        np.savez(root / "crf.npz", **bioes_constraints(NER_TAGS))
    write_manifest(root, manifest)
    return root


def bioes_constraints(tags: Sequence[str]) -> dict[str, np.ndarray]:
    """CRF parameters that allow only valid BIOES sequences (−10 on every invalid move)."""
    k = len(tags)
    transitions = np.full((k, k), -10.0)
    start = np.full(k, -10.0)
    end = np.full(k, -10.0)
    for j, tag in enumerate(tags):
        prefix, _, kind = tag.partition("-")
        if prefix in ("O", "B", "S"):
            start[j] = 0.0
        if prefix in ("O", "E", "S"):
            end[j] = 0.0
        for i, previous in enumerate(tags):
            p_prefix, _, p_kind = previous.partition("-")
            if prefix in ("I", "E"):
                ok = p_prefix in ("B", "I") and p_kind == kind
            else:
                ok = p_prefix in ("O", "E", "S")
            transitions[i, j] = 0.0 if ok else -10.0
    return {"start_transitions": start, "end_transitions": end, "transitions": transitions}


def build_tiny_sentiment(root: Path, positive: str, negative: str, *, max_seq_length: int = 32) -> Path:
    """A sentiment directory: each character votes; ``positive`` chars for positive, etc."""
    root.mkdir(parents=True, exist_ok=True)
    vocab = write_vocab(root / "vocab.txt", list(positive + negative))
    table = np.zeros((len(vocab), 2), dtype=np.float32)
    for char in positive:
        table[vocab.index(char)] = [0.0, 3.0]
    for char in negative:
        table[vocab.index(char)] = [3.0, 0.0]
    _save_linear_graph(root / "model.onnx", table, "logits", pooled=True)
    write_manifest(
        root,
        Manifest(
            name="tiny-sentiment",
            version="0.0.1",
            task="sentiment",
            labels=["negative", "positive"],
            max_seq_length=max_seq_length,
            onnx=OnnxSpec(model="model.onnx", inputs=["input_ids", "attention_mask"], output="logits"),
            provenance={"source": "test fixture"},
        ),
    )
    return root
