"""The NER model core: tokenise → ONNX Runtime → CRF/argmax decode → entities. No Ray here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from deployments.runtime.crf import CrfParams, tag_marginals, viterbi_decode
from deployments.runtime.model_dir import ModelDir
from deployments.runtime.session import create_session, needs_row_by_row, run_rows
from deployments.runtime.spans import Entity, build_entities
from deployments.runtime.tokenizer import BertChineseTokenizer


class NerModel:
    """Batch-first named-entity recogniser over one model directory.

    ``predict(texts)`` returns one list of entities per text; every entity satisfies
    ``text[start:end] == entity.text``.
    """

    def __init__(
        self,
        model_dir: ModelDir,
        session: ort.InferenceSession,
        tokenizer: BertChineseTokenizer,
        crf: CrfParams | None,
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

    @classmethod
    def from_model_dir(cls, path: str | Path, *, intra_op_threads: int = 1, verify_checksums: bool = True) -> NerModel:
        model_dir = ModelDir.load(path, verify_checksums=verify_checksums)
        manifest = model_dir.manifest
        tokenizer = BertChineseTokenizer.from_vocab_file(
            model_dir.file(manifest.tokenizer.vocab), lowercase=manifest.tokenizer.lowercase
        )
        crf = CrfParams.load(model_dir.file(manifest.crf)) if manifest.crf else None
        session = create_session(model_dir.file(manifest.onnx.model), intra_op_threads=intra_op_threads)
        return cls(model_dir, session, tokenizer, crf)

    @property
    def max_seq_length(self) -> int:
        return self.manifest.max_seq_length

    def emissions(self, texts: Sequence[str]) -> tuple[list[np.ndarray], list[list[tuple[int, int]]]]:
        """Emissions [T_i, K] of each text (including [CLS]/[SEP] rows) and the code-point offsets
        of its real tokens. Dynamic-INT8 models run one text per call (see ``needs_row_by_row``)."""
        if not self.row_by_row:
            batch = self.tokenizer.encode_batch(texts, max_length=self.max_seq_length)
            (emissions,) = self.session.run([self.manifest.onnx.output], batch.feeds(self.manifest.onnx.inputs))
            return list(emissions), batch.offsets
        batches = [self.tokenizer.encode_batch([text], max_length=self.max_seq_length) for text in texts]
        outputs = run_rows(
            self.session, self.manifest.onnx.output, [b.feeds(self.manifest.onnx.inputs) for b in batches]
        )
        return [output[0] for output in outputs], [b.offsets[0] for b in batches]

    def predict(self, texts: Sequence[str]) -> list[list[Entity]]:
        """Entities of each text. Texts must fit ``max_seq_length`` tokens (see chunking)."""
        if not texts:
            return []
        emissions, offsets = self.emissions(texts)
        results: list[list[Entity]] = []
        for text, text_emissions, token_offsets in zip(texts, emissions, offsets, strict=True):
            length = len(token_offsets)
            if length == 0:
                results.append([])
                continue
            # Position 0 is [CLS]; real tokens are 1..length. Decode those only.
            tag_ids, confidences = self._decode(text_emissions[1 : 1 + length])
            tags = [self.labels[tag_id] for tag_id in tag_ids]
            results.append(build_entities(text, tags, token_offsets, confidences, self.manifest.tag_scheme or "BIO"))
        return results

    def _decode(self, token_emissions: np.ndarray) -> tuple[list[int], list[float]]:
        if self.crf is not None:
            path, _ = viterbi_decode(token_emissions, self.crf)
            marginals = tag_marginals(token_emissions, self.crf)
        else:
            path = [int(index) for index in token_emissions.argmax(axis=-1)]
            marginals = _softmax(token_emissions)
        confidences = [float(marginals[position, tag]) for position, tag in enumerate(path)]
        return path, confidences


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
