"""Reading ModelScope model directories: which architecture, which labels, which files.

The layouts reproduce ModelScope's own loaders (``modelscope`` 1.x source):

* RaNER (``configuration.json`` ``model.type == "transformer-crf"``,
  ``ModelForTokenClassificationWithCRF``): BERT/StructBERT backbone keys under ``encoder.``, head
  ``head.linear.{weight,bias}`` and ``head.crf.{start_transitions,end_transitions,transitions}``
  (ModelScope's checkpoint loader also accepts the head keys without ``head.``).
* StructBERT sentiment (``model.type == "structbert"``, ``SbertForSequenceClassification``):
  ``bert.*`` backbone with pooler, ``classifier.{weight,bias}``.

The encoder type and its hyper-parameters come from ``configuration.json`` ``model.backbone`` or
``model.model_type`` when present, else from ``config.json`` (ModelScope's
``EncoderModel.parse_encoder_cfg``). Labels come from ``label_mapping.json``, else
``configuration.json`` (``model.label2id``/``id2label``, then ``preprocessor.*``), else
``config.json`` — the order of ModelScope's ``parse_label_mapping``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from training.export.errors import MissingLabelMappingError, SourceLayoutError, UnknownModelTypeError

Task = Literal["ner", "sentiment"]

CONFIGURATION_FILE = "configuration.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "pytorch_model.bin"
VOCAB_FILE = "vocab.txt"
LABEL_MAPPING_FILE = "label_mapping.json"

# configuration.json ``model.type`` values each task can rebuild.
SUPPORTED_MODEL_TYPES: dict[str, tuple[str, ...]] = {
    "ner": ("transformer-crf",),
    "sentiment": ("structbert", "bert"),
}
# Backbones that are architecturally BERT (StructBERT changes pre-training, not the network).
SUPPORTED_ENCODER_TYPES = ("bert", "structbert")

# Sentiment class names as ModelScope ships them → the manifest's canonical names.
SENTIMENT_CANONICAL_LABELS = {
    "负面": "negative",
    "正面": "positive",
    "negative": "negative",
    "positive": "positive",
}


@dataclass(frozen=True)
class SourceModel:
    """A ModelScope model directory, understood: what to build and where its parts are."""

    path: Path
    task: Task
    model_type: str
    encoder_type: str
    encoder_config: dict[str, Any]
    labels: list[str]  # in index order; canonical names for sentiment
    source_labels: list[str]  # in index order, as the source spells them
    label_source: str
    weights: Path
    vocab: Path

    @property
    def max_seq_length(self) -> int:
        return int(self.encoder_config.get("max_position_embeddings", 512))


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceLayoutError(f"{path.parent}: {path.name} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceLayoutError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SourceLayoutError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def read_source(path: str | Path, task: Task) -> SourceModel:
    """Inspect a ModelScope model directory for ``task``; fail with a clear message if it does not fit."""
    root = Path(path)
    if not root.is_dir():
        raise SourceLayoutError(f"{root} is not a directory")
    configuration = read_json(root / CONFIGURATION_FILE)
    model_cfg = configuration.get("model") or {}
    model_type = model_cfg.get("type") or model_cfg.get("model_type")
    supported = SUPPORTED_MODEL_TYPES[task]
    if model_type not in supported:
        raise UnknownModelTypeError(
            f"{root / CONFIGURATION_FILE}: model type {model_type!r} is not supported for task {task!r}; "
            f"supported: {', '.join(supported)}"
        )

    encoder_config = _encoder_config(root, model_cfg)
    encoder_type = str(encoder_config.get("model_type") or encoder_config.get("type") or "")
    if task == "sentiment" and not encoder_type:
        encoder_type = model_type  # SbertForSequenceClassification is its own backbone
    if encoder_type not in SUPPORTED_ENCODER_TYPES:
        raise UnknownModelTypeError(
            f"{root}: encoder type {encoder_type!r} is not supported; supported: {', '.join(SUPPORTED_ENCODER_TYPES)}"
        )
    _check_encoder_config(root, encoder_config)

    label2id, label_source = resolve_label_mapping(root)
    source_labels = _labels_in_index_order(label2id, label_source)
    labels = _canonical_labels(task, source_labels, label_source)

    for name in (WEIGHTS_FILE, VOCAB_FILE):
        if not (root / name).is_file():
            raise SourceLayoutError(f"{root}: {name} not found (a ModelScope {model_type} directory has it)")
    return SourceModel(
        path=root,
        task=task,
        model_type=str(model_type),
        encoder_type=encoder_type,
        encoder_config=encoder_config,
        labels=labels,
        source_labels=source_labels,
        label_source=label_source,
        weights=root / WEIGHTS_FILE,
        vocab=root / VOCAB_FILE,
    )


def _encoder_config(root: Path, model_cfg: dict[str, Any]) -> dict[str, Any]:
    """BERT hyper-parameters: ``config.json`` overlaid by ``model.backbone`` when present."""
    config_path = root / CONFIG_FILE
    config = read_json(config_path) if config_path.is_file() else {}
    backbone = model_cfg.get("backbone")
    if isinstance(backbone, dict):
        config = {**config, **backbone}
    elif "model_type" in model_cfg and "model_type" not in config:
        config = {**config, "model_type": model_cfg["model_type"]}
    if not config:
        raise SourceLayoutError(f"{root}: {CONFIG_FILE} not found and configuration.json has no model.backbone")
    return config


REQUIRED_ENCODER_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
)


def _check_encoder_config(root: Path, config: dict[str, Any]) -> None:
    missing = [key for key in REQUIRED_ENCODER_KEYS if key not in config]
    if missing:
        raise SourceLayoutError(f"{root / CONFIG_FILE}: missing encoder settings {missing}")
    position = config.get("position_embedding_type", "absolute")
    if position != "absolute":
        raise UnknownModelTypeError(
            f"{root / CONFIG_FILE}: position_embedding_type {position!r} is not supported; supported: absolute"
        )


def resolve_label_mapping(root: Path) -> tuple[dict[str, int], str]:
    """``label → id`` and the file (and key) it came from, in ModelScope's lookup order."""
    mapping_path = root / LABEL_MAPPING_FILE
    if mapping_path.is_file():
        return _as_label2id(read_json(mapping_path), LABEL_MAPPING_FILE), LABEL_MAPPING_FILE
    configuration = read_json(root / CONFIGURATION_FILE)
    for section in ("model", "preprocessor"):
        block = configuration.get(section) or {}
        if "label2id" in block:
            where = f"{CONFIGURATION_FILE} {section}.label2id"
            return _as_label2id(block["label2id"], where), where
        if "id2label" in block:
            where = f"{CONFIGURATION_FILE} {section}.id2label"
            return _as_label2id(_invert(block["id2label"], where), where), where
    config_path = root / CONFIG_FILE
    if config_path.is_file():
        config = read_json(config_path)
        if "label2id" in config:
            return _as_label2id(config["label2id"], f"{CONFIG_FILE} label2id"), f"{CONFIG_FILE} label2id"
        if "id2label" in config:
            where = f"{CONFIG_FILE} id2label"
            return _as_label2id(_invert(config["id2label"], where), where), where
    raise MissingLabelMappingError(
        f"{root}: no label mapping found; looked for {LABEL_MAPPING_FILE}, label2id/id2label under "
        f"'model' or 'preprocessor' in {CONFIGURATION_FILE}, and label2id/id2label in {CONFIG_FILE}"
    )


def _invert(id2label: Any, where: str) -> dict[str, Any]:
    if not isinstance(id2label, dict):
        raise MissingLabelMappingError(f"{where} must be an object of id → label, found {id2label!r}")
    return {str(label): index for index, label in id2label.items()}


def _as_label2id(mapping: Any, where: str) -> dict[str, int]:
    if not isinstance(mapping, dict) or not mapping:
        raise MissingLabelMappingError(f"{where} must be a non-empty object of label → id, found {mapping!r}")
    try:
        return {str(label): int(index) for label, index in mapping.items()}
    except (TypeError, ValueError):
        raise MissingLabelMappingError(f"{where}: every id must be an integer, found {mapping!r}") from None


def _labels_in_index_order(label2id: dict[str, int], where: str) -> list[str]:
    ids = sorted(label2id.values())
    if ids != list(range(len(label2id))):
        raise MissingLabelMappingError(f"{where}: ids must be 0..{len(label2id) - 1} with no gaps, found {ids}")
    by_id = {index: label for label, index in label2id.items()}
    return [by_id[index] for index in range(len(by_id))]


def _canonical_labels(task: Task, labels: list[str], where: str) -> list[str]:
    if task == "ner":
        return list(labels)
    unknown = [label for label in labels if label not in SENTIMENT_CANONICAL_LABELS]
    if unknown or len(labels) != 2:
        raise MissingLabelMappingError(
            f"{where}: sentiment labels must be two of {sorted(SENTIMENT_CANONICAL_LABELS)}, found {labels}"
        )
    canonical = [SENTIMENT_CANONICAL_LABELS[label] for label in labels]
    if len(set(canonical)) != 2:
        raise MissingLabelMappingError(f"{where}: sentiment labels {labels} do not name one negative and one positive")
    return canonical
