"""The manifest is the contract: invalid directories fail fast with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployments.runtime.model_dir import MANIFEST_NAME, ModelDir, ModelDirError
from tests.support.tiny_models import build_tiny_ner, build_tiny_sentiment


def edit_manifest(root: Path, **changes: object) -> None:
    path = root / MANIFEST_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


def test_valid_directories_load(tmp_path: Path) -> None:
    ner = ModelDir.load(build_tiny_ner(tmp_path / "ner", {"马云": "PER"}))
    assert ner.manifest.entity_types == ["PER", "LOC", "ORG"]
    assert ner.manifest.model_id == "tiny-ner@0.0.1"
    sentiment = ModelDir.load(build_tiny_sentiment(tmp_path / "s", "好", "差"))
    assert sentiment.manifest.entity_types == []


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match=r"manifest\.json not found"):
        ModelDir.load(tmp_path)


def test_tampered_file_fails_its_checksum(tmp_path: Path) -> None:
    root = build_tiny_ner(tmp_path / "ner", {"马云": "PER"})
    with open(root / "vocab.txt", "a", encoding="utf-8") as handle:
        handle.write("多\n")
    with pytest.raises(ModelDirError, match=r"vocab\.txt does not match its sha256"):
        ModelDir.load(root)
    ModelDir.load(root, verify_checksums=False)  # explicitly skipping the check still loads


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task": "pos"}, "task"),
        ({"labels": ["O", "X-PER"]}, "does not fit the BIOES scheme"),
        ({"labels": ["O", "O"]}, "unique"),
        ({"decoder": None}, "needs tag_scheme and decoder"),
        ({"crf": None}, "needs the 'crf' transitions file"),
        ({"onnx": {"model": "model.onnx", "inputs": ["pixels"], "output": "emissions"}}, "onnx.inputs"),
        ({"unexpected": 1}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_manifests_are_rejected(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    root = build_tiny_ner(tmp_path / "ner", {"马云": "PER"})
    edit_manifest(root, **changes)
    with pytest.raises(ModelDirError, match=message):
        ModelDir.load(root)


def test_sentiment_labels_must_be_canonical(tmp_path: Path) -> None:
    root = build_tiny_sentiment(tmp_path / "s", "好", "差")
    edit_manifest(root, labels=["负面", "正面"])
    with pytest.raises(ModelDirError, match="sentiment labels must be exactly"):
        ModelDir.load(root)
