"""Shape twins: ModelScope model directories with random weights and the real layout.

A twin has exactly the files, keys, shapes and label sets of the production model (base: 12 layers,
hidden 768, 21,128-token vocabulary), so tests and benchmarks exercise the real export path and
measure real memory and latency without hub access. Its predictions are meaningless.

Assumption (the hub is not reachable from here): RaNER news tags PER/LOC/ORG in the B/I/E/S/O scheme
and its ``label_mapping.json`` lists them in the order of :data:`RANER_NEWS_LABELS`; StructBERT
sentiment's ``config.json`` has ``id2label {"0": "负面", "1": "正面"}``. The exporter does not rely
on either order: it reads whatever mapping the directory holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from training.export.layouts import (
    CONFIG_FILE,
    CONFIGURATION_FILE,
    LABEL_MAPPING_FILE,
    VOCAB_FILE,
    WEIGHTS_FILE,
    Task,
)
from training.export.modules import build_module
from training.export.samples import LATENCY_SENTENCE, SAMPLE_SENTENCES

Size = Literal["base", "tiny"]
TWIN_MARKER = "TWIN.json"  # tells the exporter (and any reader) that the weights are random

RANER_NEWS_LABELS: tuple[str, ...] = (
    "O",
    "B-LOC", "I-LOC", "E-LOC", "S-LOC",
    "B-ORG", "I-ORG", "E-ORG", "S-ORG",
    "B-PER", "I-PER", "E-PER", "S-PER",
)  # fmt: skip
SENTIMENT_ID2LABEL: dict[str, str] = {"0": "负面", "1": "正面"}

BASE_VOCAB_SIZE = 21128


@dataclass(frozen=True)
class TwinShape:
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int


SHAPES: dict[str, TwinShape] = {
    "base": TwinShape(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "tiny": TwinShape(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64),
}


def base_vocabulary() -> list[str]:
    """21,128 tokens laid out like bert-base-chinese: [PAD], [unused1-99], [UNK] [CLS] [SEP] [MASK], …, CJK."""
    tokens = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += ["<S>", "<T>"]
    tokens += [chr(code) for code in range(33, 127)]  # ASCII punctuation, digits, letters
    tokens += [chr(code) for code in range(0x4E00, 0x9FA6)]  # CJK Unified Ideographs (20,902)
    filler = (f"##{chr(code)}" for code in range(ord("a"), ord("z") + 1))
    while len(tokens) < BASE_VOCAB_SIZE:
        tokens.append(next(filler))
    return tokens


def tiny_vocabulary() -> list[str]:
    """The special tokens, ASCII and every character of the sample sentences (≈ 500 tokens)."""
    tokens = ["[PAD]", *(f"[unused{i}]" for i in range(1, 10)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += [chr(code) for code in range(33, 127)]
    seen = set(tokens)
    for char in sorted(set("".join(SAMPLE_SENTENCES) + LATENCY_SENTENCE)):
        if char not in seen and not char.isspace():
            tokens.append(char)
            seen.add(char)
    return tokens


def encoder_config_json(shape: TwinShape, vocab_size: int, *, model_type: str, **extra: Any) -> dict[str, Any]:
    """A ModelScope/BERT ``config.json``."""
    return {
        "architectures": extra.pop("architectures", ["BertModel"]),
        "model_type": model_type,
        "vocab_size": vocab_size,
        "hidden_size": shape.hidden_size,
        "num_hidden_layers": shape.num_hidden_layers,
        "num_attention_heads": shape.num_attention_heads,
        "intermediate_size": shape.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        **extra,
    }


def build_twin(
    task: Task,
    size: Size,
    out: str | Path,
    *,
    seed: int = 0,
    head_prefix: bool = True,
) -> Path:
    """Write a twin of the RaNER news (``ner``) or StructBERT sentiment model into ``out``.

    ``head_prefix=False`` writes RaNER head keys without ``head.`` (``linear.*``, ``crf.*``), the
    variant ModelScope's loader also accepts. Returns ``out``.
    """
    if size not in SHAPES:
        raise ValueError(f"size must be one of {sorted(SHAPES)}, got {size!r}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    shape = SHAPES[size]
    vocab = base_vocabulary() if size == "base" else tiny_vocabulary()
    (root / VOCAB_FILE).write_text("\n".join(vocab) + "\n", encoding="utf-8")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if task == "ner":
            _write_raner(root, shape, len(vocab), head_prefix=head_prefix)
        else:
            _write_sentiment(root, shape, len(vocab))
    finally:
        torch.random.set_rng_state(generator_state)
    marker = {"size": size, "task": task, "seed": seed, "head_prefix": head_prefix, "weights": "random"}
    _write_json(root / TWIN_MARKER, marker)
    return root


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _write_raner(root: Path, shape: TwinShape, vocab_size: int, *, head_prefix: bool) -> None:
    _write_json(
        root / CONFIGURATION_FILE,
        {
            "framework": "pytorch",
            "task": "named-entity-recognition",
            "model": {"type": "transformer-crf"},
            "pipeline": {"type": "named-entity-recognition"},
            "preprocessor": {"type": "sequence-labeling-tokenizer"},
        },
    )
    _write_json(root / CONFIG_FILE, encoder_config_json(shape, vocab_size, model_type="bert"))
    _write_json(root / LABEL_MAPPING_FILE, {label: index for index, label in enumerate(RANER_NEWS_LABELS)})
    config = encoder_config_json(shape, vocab_size, model_type="bert")
    module = build_module("ner", config, len(RANER_NEWS_LABELS))
    pooler = torch.nn.Linear(shape.hidden_size, shape.hidden_size)  # ModelScope's backbone keeps one
    with torch.no_grad():
        for parameter in module.crf.parameters():  # ModelScope's CRF.reset_parameters
            parameter.uniform_(-0.1, 0.1)
    head = "head." if head_prefix else ""
    state: dict[str, torch.Tensor] = {}
    for key, tensor in module.encoder.state_dict().items():
        state[f"encoder.{key}"] = tensor
    state["encoder.embeddings.position_ids"] = torch.arange(512).expand((1, -1)).clone()
    state["encoder.pooler.dense.weight"] = pooler.weight.detach().clone()
    state["encoder.pooler.dense.bias"] = pooler.bias.detach().clone()
    for key, tensor in module.linear.state_dict().items():
        state[f"{head}linear.{key}"] = tensor
    for key, tensor in module.crf.state_dict().items():
        state[f"{head}crf.{key}"] = tensor
    torch.save(state, root / WEIGHTS_FILE)


def _write_sentiment(root: Path, shape: TwinShape, vocab_size: int) -> None:
    _write_json(
        root / CONFIGURATION_FILE,
        {
            "framework": "pytorch",
            "task": "sentiment-classification",
            "model": {"type": "structbert"},
            "pipeline": {"type": "sentiment-classification"},
            "preprocessor": {"type": "sen-cls-tokenizer"},
        },
    )
    config = encoder_config_json(
        shape,
        vocab_size,
        model_type="structbert",
        architectures=["SbertForSequenceClassification"],
        id2label=SENTIMENT_ID2LABEL,
        label2id={label: int(index) for index, label in SENTIMENT_ID2LABEL.items()},
    )
    _write_json(root / CONFIG_FILE, config)
    module = build_module("sentiment", config, len(SENTIMENT_ID2LABEL))
    state: dict[str, torch.Tensor] = {}
    for key, tensor in module.encoder.state_dict().items():
        state[f"bert.{key}"] = tensor
    state["bert.embeddings.position_ids"] = torch.arange(512).expand((1, -1)).clone()
    for key, tensor in module.classifier.state_dict().items():
        state[f"classifier.{key}"] = tensor
    torch.save(state, root / WEIGHTS_FILE)
