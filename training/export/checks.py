"""Parity (ONNX FP32 vs torch) and agreement (INT8 vs FP32) checks on fixed sample sentences."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from deployments.runtime.crf import CrfParams, viterbi_decode
from deployments.runtime.spans import tags_to_token_spans
from deployments.runtime.tokenizer import BertChineseTokenizer, EncodedBatch
from training.export.layouts import Task
from training.export.modules import TokenClassifierWithCrf, torch_viterbi
from training.export.onnx_export import ONNX_INPUTS

PARITY_TOLERANCE = 1e-4
NER_SPAN_AGREEMENT_MIN = 0.98
SENTIMENT_LABEL_AGREEMENT_MIN = 0.99
BATCH_SIZE = 8


@dataclass(frozen=True)
class ParityReport:
    sentences: int
    max_abs_diff: float
    tolerance: float
    crf_paths_identical: bool | None  # None for sentiment
    crf_path_mismatches: int

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.crf_paths_identical is not False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass(frozen=True)
class AgreementReport:
    """INT8 vs FP32 on the sample sentences.

    NER: span agreement = 2·|common spans| / (|FP32 spans| + |INT8 spans|), spans being
    (sentence, first token, last token, type) — the F1 of INT8 measured against FP32 (1.0 if neither
    finds a span). Sentiment: the share of sentences with the same label.
    """

    metric: str
    value: float
    threshold: float
    sentences: int
    fp32_items: int  # NER: spans found by FP32; sentiment: sentences
    int8_items: int
    identical_outputs: int  # sentences whose whole tag path / label is identical

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def cpu_session(path: str | Path, *, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def batches(tokenizer: BertChineseTokenizer, sentences: Sequence[str], max_seq_length: int) -> list[EncodedBatch]:
    return [
        tokenizer.encode_batch(sentences[start : start + BATCH_SIZE], max_length=max_seq_length)
        for start in range(0, len(sentences), BATCH_SIZE)
    ]


def run_onnx(session: ort.InferenceSession, batch: EncodedBatch) -> np.ndarray:
    return session.run(None, batch.feeds(ONNX_INPUTS))[0]


def run_torch(module: nn.Module, batch: EncodedBatch) -> np.ndarray:
    with torch.no_grad():
        output = module(
            torch.from_numpy(batch.input_ids),
            torch.from_numpy(batch.attention_mask),
            torch.from_numpy(batch.token_type_ids),
        )
    return output.numpy()


def crf_params(module: TokenClassifierWithCrf) -> CrfParams:
    return CrfParams(
        start_transitions=module.crf.start_transitions.detach().double().numpy(),
        end_transitions=module.crf.end_transitions.detach().double().numpy(),
        transitions=module.crf.transitions.detach().double().numpy(),
    )


def parity_check(
    module: nn.Module,
    task: Task,
    onnx_path: str | Path,
    tokenizer: BertChineseTokenizer,
    sentences: Sequence[str],
    *,
    max_seq_length: int,
    tolerance: float = PARITY_TOLERANCE,
) -> ParityReport:
    """ONNX Runtime FP32 against torch: max |difference| over every real position, and CRF paths.

    The CRF paths compare the torch reference decoder (ModelScope's recursion) on torch emissions
    with the numpy decoder zhserve serves with on ONNX emissions, over the tokens between [CLS] and
    [SEP] — the positions RaNER's pipeline decodes.
    """
    session = cpu_session(onnx_path)
    worst = 0.0
    mismatches = 0
    crf = crf_params(module) if isinstance(module, TokenClassifierWithCrf) else None
    for batch in batches(tokenizer, sentences, max_seq_length):
        expected = run_torch(module, batch)
        actual = run_onnx(session, batch)
        if task == "ner":
            real = batch.attention_mask.astype(bool)
            worst = max(worst, float(np.abs(expected - actual)[real].max()))
        else:
            worst = max(worst, float(np.abs(expected - actual).max()))
        if crf is not None and isinstance(module, TokenClassifierWithCrf):
            lengths = [len(offsets) for offsets in batch.offsets]
            width = max(lengths)
            inner = torch.from_numpy(expected[:, 1 : 1 + width])
            mask = torch.tensor([[i < n for i in range(width)] for n in lengths])
            reference = torch_viterbi(inner, mask, module.crf)
            for row, length in enumerate(lengths):
                served, _ = viterbi_decode(actual[row, 1 : 1 + length], crf)
                mismatches += int(served != reference[row])
    return ParityReport(
        sentences=len(sentences),
        max_abs_diff=worst,
        tolerance=tolerance,
        crf_paths_identical=None if crf is None else mismatches == 0,
        crf_path_mismatches=mismatches,
    )


def ner_spans(
    session: ort.InferenceSession,
    tokenizer: BertChineseTokenizer,
    sentences: Sequence[str],
    *,
    labels: Sequence[str],
    tag_scheme: str,
    crf: CrfParams,
    max_seq_length: int,
) -> list[tuple[list[int], set[tuple[int, int, str]]]]:
    """Each sentence's tag path and token spans, decoded as zhserve serves them."""
    results = []
    for batch in batches(tokenizer, sentences, max_seq_length):
        emissions = run_onnx(session, batch)
        for row, offsets in enumerate(batch.offsets):
            path, _ = viterbi_decode(emissions[row, 1 : 1 + len(offsets)], crf)
            spans = set(tags_to_token_spans([labels[tag] for tag in path], tag_scheme))
            results.append((path, spans))
    return results


def agreement_check(
    task: Task,
    fp32_path: str | Path,
    int8_path: str | Path,
    tokenizer: BertChineseTokenizer,
    sentences: Sequence[str],
    *,
    max_seq_length: int,
    labels: Sequence[str],
    crf: CrfParams | None = None,
    tag_scheme: str = "BIOES",
) -> AgreementReport:
    """How often the INT8 model says what the FP32 model says."""
    fp32, int8 = cpu_session(fp32_path), cpu_session(int8_path)
    if task == "ner":
        if crf is None:
            raise ValueError("NER agreement needs the CRF parameters")
        kwargs = {"labels": labels, "tag_scheme": tag_scheme, "crf": crf, "max_seq_length": max_seq_length}
        reference = ner_spans(fp32, tokenizer, sentences, **kwargs)  # type: ignore[arg-type]
        candidate = ner_spans(int8, tokenizer, sentences, **kwargs)  # type: ignore[arg-type]
        common = sum(len(a[1] & b[1]) for a, b in zip(reference, candidate, strict=True))
        fp32_spans = sum(len(spans) for _, spans in reference)
        int8_spans = sum(len(spans) for _, spans in candidate)
        total = fp32_spans + int8_spans
        return AgreementReport(
            metric="span agreement (F1 of INT8 against FP32)",
            value=1.0 if total == 0 else 2 * common / total,
            threshold=NER_SPAN_AGREEMENT_MIN,
            sentences=len(sentences),
            fp32_items=fp32_spans,
            int8_items=int8_spans,
            identical_outputs=sum(a[0] == b[0] for a, b in zip(reference, candidate, strict=True)),
        )
    same = 0
    for batch in batches(tokenizer, sentences, max_seq_length):
        same += int((run_onnx(fp32, batch).argmax(-1) == run_onnx(int8, batch).argmax(-1)).sum())
    return AgreementReport(
        metric="label agreement",
        value=same / len(sentences),
        threshold=SENTIMENT_LABEL_AGREEMENT_MIN,
        sentences=len(sentences),
        fp32_items=len(sentences),
        int8_items=len(sentences),
        identical_outputs=same,
    )
