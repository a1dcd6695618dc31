"""The model directory: a folder of artifacts described by ``manifest.json``.

See docs/model-directory.md. Everything the serving code knows about a model — task, labels, tag
scheme, maximum length, ONNX input and output names — comes from here, so the embedded models,
exported ModelScope models and shape twins are all served by the same code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
SENTIMENT_LABELS = frozenset({"negative", "positive"})
ONNX_INPUT_NAMES = frozenset({"input_ids", "attention_mask", "token_type_ids"})


class ModelDirError(ValueError):
    """A model directory is missing, malformed, or its files do not match their checksums."""


class TokenizerSpec(BaseModel):
    """How the model's text becomes token ids (see docs/model-directory.md)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["wordpiece", "tokenizers-json"] = "wordpiece"
    # wordpiece: BERT-Chinese over a vocab.txt
    vocab: str = "vocab.txt"
    lowercase: bool = True
    # tokenizers-json: a Hugging Face `tokenizers` serialisation, and its special tokens
    file: str = "tokenizer.json"
    cls_token: str = "[CLS]"
    sep_token: str = "[SEP]"
    pad_token: str = "[PAD]"

    @property
    def artifact(self) -> str:
        """The file the tokenizer is read from."""
        return self.vocab if self.type == "wordpiece" else self.file


class OnnxSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = "model.onnx"
    inputs: list[str] = Field(default_factory=lambda: ["input_ids", "attention_mask"])
    output: str

    @model_validator(mode="after")
    def _known_inputs(self) -> OnnxSpec:
        unknown = [name for name in self.inputs if name not in ONNX_INPUT_NAMES]
        if unknown or not self.inputs:
            raise ValueError(f"onnx.inputs must be a non-empty subset of {sorted(ONNX_INPUT_NAMES)}, got {self.inputs}")
        return self


class Manifest(BaseModel):
    """The contents of ``manifest.json``."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    name: str
    version: str
    task: Literal["ner", "sentiment"]
    architecture: str = ""
    labels: list[str]
    tag_scheme: Literal["BIO", "BIOES"] | None = None
    decoder: Literal["crf", "argmax"] | None = None
    crf: str | None = None
    max_seq_length: int = Field(ge=8, le=8192)
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    onnx: OnnxSpec
    quantization: Literal["none", "int8-dynamic", "int8-weight-only"] = "none"
    files: dict[str, str] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if len(set(self.labels)) != len(self.labels) or not self.labels:
            raise ValueError(f"labels must be non-empty and unique, got {self.labels}")
        if self.task == "sentiment":
            if set(self.labels) != SENTIMENT_LABELS:
                raise ValueError(f"sentiment labels must be exactly {sorted(SENTIMENT_LABELS)}, got {self.labels}")
        else:
            if self.tag_scheme is None or self.decoder is None:
                raise ValueError("an NER manifest needs tag_scheme and decoder")
            if self.decoder == "crf" and not self.crf:
                raise ValueError("decoder 'crf' needs the 'crf' transitions file")
            allowed = set("BIES") if self.tag_scheme == "BIOES" else set("BI")
            for tag in self.labels:
                prefix, _, entity_type = tag.partition("-")
                if tag != "O" and (prefix not in allowed or not entity_type):
                    raise ValueError(f"tag {tag!r} does not fit the {self.tag_scheme} scheme")
        return self

    @property
    def model_id(self) -> str:
        """``name@version``, as reported in API responses."""
        return f"{self.name}@{self.version}"

    def summary(self) -> dict[str, Any]:
        """What ``GET /v1/models`` and a replica's ``info()`` report about the model."""
        return {
            "task": self.task,
            "name": self.name,
            "version": self.version,
            "model": self.model_id,
            "labels": list(self.labels),
            "entity_types": self.entity_types,
            "tag_scheme": self.tag_scheme,
            "quantization": self.quantization,
            "max_seq_length": self.max_seq_length,
            "architecture": self.architecture,
            "provenance": dict(self.provenance),
        }

    @property
    def entity_types(self) -> list[str]:
        """NER entity types in label order (``["PER", "LOC", "ORG"]``), empty for sentiment."""
        if self.task != "ner":
            return []
        seen: dict[str, None] = {}
        for tag in self.labels:
            if tag != "O":
                seen.setdefault(tag.split("-", 1)[1], None)
        return list(seen)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelDir:
    """A validated model directory. Use :meth:`load`."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest

    @classmethod
    def load(cls, path: str | Path, *, verify_checksums: bool = True) -> ModelDir:
        """Read and validate ``path/manifest.json``; check every listed file's sha256."""
        root = Path(path)
        manifest_path = root / MANIFEST_NAME
        if not manifest_path.is_file():
            raise ModelDirError(f"{root} is not a model directory: {MANIFEST_NAME} not found")
        try:
            manifest = Manifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            raise ModelDirError(f"{manifest_path} is invalid: {exc}") from exc
        needed = [manifest.onnx.model, manifest.tokenizer.artifact]
        if manifest.crf:
            needed.append(manifest.crf)
        for name in needed:
            if name not in manifest.files:
                raise ModelDirError(f"{manifest_path}: file {name!r} has no checksum in 'files'")
        for name, expected in manifest.files.items():
            file_path = root / name
            if not file_path.is_file():
                raise ModelDirError(f"{root}: {name} is listed in the manifest but missing")
            if verify_checksums and sha256_file(file_path) != expected:
                raise ModelDirError(f"{root}: {name} does not match its sha256 in the manifest")
        return cls(root, manifest)

    def file(self, name: str) -> Path:
        return self.path / name


def write_manifest(path: str | Path, manifest: Manifest) -> Manifest:
    """Checksum the artifact files and write ``manifest.json``; returns the manifest written.

    The files checksummed are the ONNX model, the tokenizer's file, the CRF file (if any) and any
    names already in ``manifest.files``.
    """
    root = Path(path)
    names = {manifest.onnx.model, manifest.tokenizer.artifact, *manifest.files}
    if manifest.crf:
        names.add(manifest.crf)
    files = {name: sha256_file(root / name) for name in sorted(names)}
    final = manifest.model_copy(update={"files": files})
    (root / MANIFEST_NAME).write_text(
        json.dumps(final.model_dump(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return final
