"""Reading ModelScope directories: labels, model types, key mapping, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from training.export.errors import (  # noqa: E402
    MissingLabelMappingError,
    StateDictMismatchError,
    UnknownModelTypeError,
)
from training.export.layouts import read_source  # noqa: E402
from training.export.modules import load_source_module  # noqa: E402
from training.export.twin import RANER_NEWS_LABELS, base_vocabulary  # noqa: E402

pytestmark = pytest.mark.export


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_raner_layout_reads_labels_and_encoder(twins: dict[str, Path]) -> None:
    source = read_source(twins["ner"], "ner")
    assert source.model_type == "transformer-crf"
    assert source.encoder_type == "bert"
    assert source.labels == list(RANER_NEWS_LABELS)
    assert source.label_source == "label_mapping.json"
    assert source.max_seq_length == 512


def test_sentiment_labels_are_canonical(twins: dict[str, Path]) -> None:
    source = read_source(twins["sentiment"], "sentiment")
    assert source.source_labels == ["负面", "正面"]
    assert source.labels == ["negative", "positive"]


def test_labels_fall_back_to_configuration_json(twins: dict[str, Path], tmp_path: Path) -> None:
    root = copy(twins["ner"], tmp_path / "ner")
    mapping = json.loads((root / "label_mapping.json").read_text(encoding="utf-8"))
    (root / "label_mapping.json").unlink()
    configuration = json.loads((root / "configuration.json").read_text(encoding="utf-8"))
    configuration["model"]["id2label"] = {str(index): label for label, index in mapping.items()}
    (root / "configuration.json").write_text(json.dumps(configuration), encoding="utf-8")
    source = read_source(root, "ner")
    assert source.labels == list(RANER_NEWS_LABELS)
    assert source.label_source == "configuration.json model.id2label"


def test_missing_label_mapping_is_a_clear_error(twins: dict[str, Path], tmp_path: Path) -> None:
    root = copy(twins["ner"], tmp_path / "ner")
    (root / "label_mapping.json").unlink()
    with pytest.raises(MissingLabelMappingError, match="no label mapping found"):
        read_source(root, "ner")


def test_unknown_model_type_lists_the_supported_ones(twins: dict[str, Path], tmp_path: Path) -> None:
    root = copy(twins["ner"], tmp_path / "ner")
    configuration = json.loads((root / "configuration.json").read_text(encoding="utf-8"))
    configuration["model"]["type"] = "lstm-crf"
    (root / "configuration.json").write_text(json.dumps(configuration), encoding="utf-8")
    with pytest.raises(UnknownModelTypeError, match=r"'lstm-crf'.*supported: transformer-crf"):
        read_source(root, "ner")
    with pytest.raises(UnknownModelTypeError, match="supported: structbert, bert"):
        read_source(twins["ner"], "sentiment")


def test_head_keys_with_and_without_prefix_load(twins: dict[str, Path]) -> None:
    keys_with = torch.load(twins["ner"] / "pytorch_model.bin", weights_only=True)
    keys_without = torch.load(twins["ner-no-head-prefix"] / "pytorch_model.bin", weights_only=True)
    assert "head.crf.transitions" in keys_with and "crf.transitions" in keys_without
    for name in ("ner", "ner-no-head-prefix"):
        module, report = load_source_module(read_source(twins[name], "ner"))
        assert "encoder.pooler.dense.weight" in report.ignored
        stored = keys_with if name == "ner" else keys_without
        prefix = "head." if name == "ner" else ""
        assert torch.equal(module.crf.transitions, stored[f"{prefix}crf.transitions"])


def test_unexpected_and_missing_keys_fail_clearly(twins: dict[str, Path], tmp_path: Path) -> None:
    root = copy(twins["ner"], tmp_path / "ner")
    state = torch.load(root / "pytorch_model.bin", weights_only=True)
    state["head.extra.weight"] = torch.zeros(1)
    del state["head.crf.end_transitions"]
    torch.save(state, root / "pytorch_model.bin")
    with pytest.raises(StateDictMismatchError, match=r"missing \[crf.end_transitions\].*unexpected \[head.extra"):
        load_source_module(read_source(root, "ner"))


def test_base_vocabulary_has_the_real_size_and_special_ids() -> None:
    vocab = base_vocabulary()
    assert len(vocab) == 21128 == len(set(vocab))
    assert [vocab.index(token) for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 100, 101, 102, 103]
    assert "中" in vocab and "国" in vocab
