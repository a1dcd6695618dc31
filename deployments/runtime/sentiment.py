"""The sentiment model core: token ids → ONNX Runtime → softmax. No Ray here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from deployments.runtime.model_dir import ModelDir
from deployments.runtime.session import (
    create_session,
    needs_row_by_row,
    row_executor,
    run_rows,
    tokens_in_flight,
)
from deployments.runtime.tokenizer import Tokenizer


@dataclass(frozen=True)
class SentimentResult:
    label: str
    score: float
    scores: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return {"label": self.label, "score": self.score, "scores": dict(self.scores)}


class SentimentModel:
    """Batch-first binary sentiment classifier over one model directory."""

    def __init__(
        self, model_dir: ModelDir, session: ort.InferenceSession, tokenizer: Tokenizer, *, row_threads: int = 1
    ) -> None:
        if model_dir.manifest.task != "sentiment":
            raise ValueError(f"{model_dir.path} holds a {model_dir.manifest.task!r} model, not 'sentiment'")
        self.model_dir = model_dir
        self.manifest = model_dir.manifest
        self.session = session
        self.tokenizer = tokenizer
        self.labels = list(self.manifest.labels)
        self.row_by_row = needs_row_by_row(self.manifest.quantization)
        self.rows_executor = row_executor(row_threads) if self.row_by_row else None
        self.row_threads = row_threads if self.row_by_row else 1

    @classmethod
    def from_model_dir(
        cls, path: str | Path, *, intra_op_threads: int = 1, row_threads: int = 1, verify_checksums: bool = True
    ) -> SentimentModel:
        model_dir = ModelDir.load(path, verify_checksums=verify_checksums)
        session = create_session(model_dir.file(model_dir.manifest.onnx.model), intra_op_threads=intra_op_threads)
        return cls(model_dir, session, Tokenizer.from_model_dir(model_dir), row_threads=row_threads)

    @property
    def max_seq_length(self) -> int:
        return self.manifest.max_seq_length

    def tokens_in_flight(self, lengths: Sequence[int]) -> int:
        """Padded positions computed at once for rows of these token counts (what a call's
        activation memory scales with)."""
        return tokens_in_flight(lengths, row_by_row=self.row_by_row, row_threads=self.row_threads)

    def probabilities_of_rows(self, rows: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities [B, num_labels] (manifest label order) of rows of token ids.
        Dynamic-INT8 models run one row per call (see ``needs_row_by_row``)."""
        output, inputs = self.manifest.onnx.output, self.manifest.onnx.inputs
        if not rows:
            return np.empty((0, len(self.labels)))
        if self.row_by_row:
            feeds = [self.tokenizer.pad([row], max_length=self.max_seq_length).feeds(inputs) for row in rows]
            logits = np.concatenate(run_rows(self.session, output, feeds, self.rows_executor), axis=0)
        else:
            batch = self.tokenizer.pad(rows, max_length=self.max_seq_length)
            (logits,) = self.session.run([output], batch.feeds(inputs))
        shifted = logits - logits.max(axis=-1, keepdims=True)
        exp = np.exp(shifted.astype(np.float64))
        return np.asarray(exp / exp.sum(axis=-1, keepdims=True))

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities [B, num_labels] in manifest label order."""
        return self.probabilities_of_rows([t.ids for t in self.tokenizer.encode(texts)])

    def results(self, probabilities: np.ndarray) -> list[SentimentResult]:
        """Label, confidence and per-label probabilities of each row of ``probabilities``."""
        results = []
        for row in probabilities:
            scores = {label: float(p) for label, p in zip(self.labels, row, strict=True)}
            best = max(scores, key=scores.__getitem__)
            results.append(SentimentResult(label=best, score=scores[best], scores=scores))
        return results

    def predict(self, texts: Sequence[str]) -> list[SentimentResult]:
        """Label, confidence and per-label probabilities of each text."""
        if not texts:
            return []
        return self.results(self.probabilities(texts))
