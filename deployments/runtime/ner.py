"""The NER model core: token ids → ONNX Runtime → CRF/argmax decode → tags → entities. No Ray here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from deployments.runtime.crf import CrfParams, decode_batch
from deployments.runtime.model_dir import ModelDir
from deployments.runtime.session import (
    create_session,
    needs_row_by_row,
    row_executor,
    run_rows,
    tokens_in_flight,
)
from deployments.runtime.spans import Entity, build_entities
from deployments.runtime.tokenizer import Tokenizer


class NerModel:
    """Batch-first named-entity recogniser over one model directory.

    ``tag(rows)`` decodes rows of token ids (what a replica is sent); ``predict(texts)`` tokenises,
    tags and builds entities, every one satisfying ``text[start:end] == entity.text``.
    """

    def __init__(
        self,
        model_dir: ModelDir,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        crf: CrfParams | None,
        *,
        row_threads: int = 1,
    ) -> None:
        manifest = model_dir.manifest
        if manifest.task != "ner":
            raise ValueError(f"{model_dir.path} holds a {manifest.task!r} model, not 'ner'")
        if manifest.decoder == "crf" and crf is None:
            raise ValueError("the manifest asks for CRF decoding but no CRF parameters were given")
        if crf is not None and crf.num_tags != len(manifest.labels):
            raise ValueError(f"the CRF has {crf.num_tags} tags; the manifest lists {len(manifest.labels)}")
        self.model_dir = model_dir
        self.manifest = manifest
        self.session = session
        self.tokenizer = tokenizer
        self.crf = crf if manifest.decoder == "crf" else None
        self.labels = list(manifest.labels)
        self.row_by_row = needs_row_by_row(manifest.quantization)
        self.rows_executor = row_executor(row_threads) if self.row_by_row else None
        self.row_threads = row_threads if self.row_by_row else 1

    @classmethod
    def from_model_dir(
        cls, path: str | Path, *, intra_op_threads: int = 1, row_threads: int = 1, verify_checksums: bool = True
    ) -> NerModel:
        model_dir = ModelDir.load(path, verify_checksums=verify_checksums)
        manifest = model_dir.manifest
        crf = CrfParams.load(model_dir.file(manifest.crf)) if manifest.crf else None
        session = create_session(model_dir.file(manifest.onnx.model), intra_op_threads=intra_op_threads)
        return cls(model_dir, session, Tokenizer.from_model_dir(model_dir), crf, row_threads=row_threads)

    @property
    def max_seq_length(self) -> int:
        return self.manifest.max_seq_length

    def tokens_in_flight(self, lengths: Sequence[int]) -> int:
        """Padded positions computed at once for rows of these token counts (what a call's
        activation memory scales with)."""
        return tokens_in_flight(lengths, row_by_row=self.row_by_row, row_threads=self.row_threads)

    def emissions(self, rows: Sequence[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """Emissions of each row of token ids: one padded [B, T, K] array, or (dynamic-INT8
        models, run one row per call, see ``needs_row_by_row``) a list of [1, T_i, K] arrays.
        Position 0 is [CLS]; a row's real tokens are positions 1 .. len(row)."""
        output, inputs = self.manifest.onnx.output, self.manifest.onnx.inputs
        if not self.row_by_row:
            batch = self.tokenizer.pad(rows, max_length=self.max_seq_length)
            (emissions,) = self.session.run([output], batch.feeds(inputs))
            return np.asarray(emissions)
        feeds = [self.tokenizer.pad([row], max_length=self.max_seq_length).feeds(inputs) for row in rows]
        return run_rows(self.session, output, feeds, self.rows_executor)

    def tag(self, rows: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per row of token ids: the decoded tag ids [n] and each tag's confidence [n] (its CRF
        marginal, or softmax probability for argmax models). Rows must fit ``max_seq_length``."""
        if not rows:
            return []
        lengths = [len(row) for row in rows]
        emissions = self.emissions(rows)
        results: list[tuple[np.ndarray, np.ndarray]] = [(np.empty(0, dtype=np.int64), np.empty(0))] * len(rows)
        real = [index for index, length in enumerate(lengths) if length > 0]
        if not real:
            return results
        if isinstance(emissions, np.ndarray):
            tokens = emissions[real, 1:]  # drop [CLS]; decode_batch reads each row's first lengths[i]
        else:
            width = max(lengths)
            tokens = np.zeros((len(real), width, emissions[0].shape[-1]), dtype=emissions[0].dtype)
            for slot, index in enumerate(real):
                tokens[slot, : lengths[index]] = emissions[index][0, 1 : 1 + lengths[index]]
        real_lengths = [lengths[index] for index in real]
        if self.crf is not None:
            paths, confidences = decode_batch(tokens, real_lengths, self.crf)
        else:
            paths, confidences = _argmax_decode(tokens, real_lengths)
        for slot, index in enumerate(real):
            results[index] = (paths[slot], confidences[slot])
        return results

    def predict(self, texts: Sequence[str]) -> list[list[Entity]]:
        """Entities of each text. Texts must fit ``max_seq_length`` tokens (see chunking)."""
        if not texts:
            return []
        tokenized = self.tokenizer.encode(texts)
        tagged = self.tag([t.ids for t in tokenized])
        scheme = self.manifest.tag_scheme or "BIO"
        return [
            build_entities(
                text, [self.labels[tag] for tag in tags], tokens.offsets.tolist(), confidences.tolist(), scheme
            )
            for text, tokens, (tags, confidences) in zip(texts, tokenized, tagged, strict=True)
        ]


def _argmax_decode(tokens: np.ndarray, lengths: Sequence[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    shifted = tokens - tokens.max(axis=-1, keepdims=True)
    exp = np.exp(shifted.astype(np.float64))
    probabilities = exp / exp.sum(axis=-1, keepdims=True)
    paths = probabilities.argmax(axis=-1)
    chosen = np.take_along_axis(probabilities, paths[..., None], axis=-1)[..., 0]
    return [paths[row, :length] for row, length in enumerate(lengths)], [
        chosen[row, :length] for row, length in enumerate(lengths)
    ]
