"""The sentiment model core: tokenise → ONNX Runtime → softmax. No Ray here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from deployments.runtime.model_dir import ModelDir
from deployments.runtime.session import create_session, needs_row_by_row, run_rows
from deployments.runtime.tokenizer import BertChineseTokenizer


@dataclass(frozen=True)
class SentimentResult:
    label: str
    score: float
    scores: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return {"label": self.label, "score": self.score, "scores": dict(self.scores)}


class SentimentModel:
    """Batch-first binary sentiment classifier over one model directory."""

    def __init__(self, model_dir: ModelDir, session: ort.InferenceSession, tokenizer: BertChineseTokenizer) -> None:
        if model_dir.manifest.task != "sentiment":
            raise ValueError(f"{model_dir.path} holds a {model_dir.manifest.task!r} model, not 'sentiment'")
        self.model_dir = model_dir
        self.manifest = model_dir.manifest
        self.session = session
        self.tokenizer = tokenizer
        self.labels = list(self.manifest.labels)
        self.row_by_row = needs_row_by_row(self.manifest.quantization)

    @classmethod
    def from_model_dir(
        cls, path: str | Path, *, intra_op_threads: int = 1, verify_checksums: bool = True
    ) -> SentimentModel:
        model_dir = ModelDir.load(path, verify_checksums=verify_checksums)
        manifest = model_dir.manifest
        tokenizer = BertChineseTokenizer.from_vocab_file(
            model_dir.file(manifest.tokenizer.vocab), lowercase=manifest.tokenizer.lowercase
        )
        session = create_session(model_dir.file(manifest.onnx.model), intra_op_threads=intra_op_threads)
        return cls(model_dir, session, tokenizer)

    @property
    def max_seq_length(self) -> int:
        return self.manifest.max_seq_length

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities [B, num_labels] in manifest label order. Dynamic-INT8 models run
        one text per call (see ``needs_row_by_row``)."""
        output, inputs = self.manifest.onnx.output, self.manifest.onnx.inputs
        if self.row_by_row:
            feeds = [
                self.tokenizer.encode_batch([text], max_length=self.max_seq_length).feeds(inputs) for text in texts
            ]
            logits = np.concatenate(run_rows(self.session, output, feeds), axis=0)
        else:
            batch = self.tokenizer.encode_batch(texts, max_length=self.max_seq_length)
            (logits,) = self.session.run([output], batch.feeds(inputs))
        shifted = logits - logits.max(axis=-1, keepdims=True)
        exp = np.exp(shifted.astype(np.float64))
        return exp / exp.sum(axis=-1, keepdims=True)

    def predict(self, texts: Sequence[str]) -> list[SentimentResult]:
        """Label, confidence and per-label probabilities of each text."""
        if not texts:
            return []
        results = []
        for row in self.probabilities(texts):
            scores = {label: float(p) for label, p in zip(self.labels, row, strict=True)}
            best = max(scores, key=scores.__getitem__)
            results.append(SentimentResult(label=best, score=scores[best], scores=scores))
        return results
