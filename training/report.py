"""The training report: what a run measured, typed, written as ``<task>_report.json`` and rendered as the
model card (``training.model_card``).

:class:`Evaluation` is what the ship step measures (ONNX scores, latency, sizes); the rest is filled by
the recipe that trained the model (:class:`NerReport`, :class:`SentimentReport`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Report(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EpochRow(_Report):
    """One row of a training history: the epoch (or a label such as "mean of last 3"), the running
    training loss, and the torch dev score of each split (token-span F1 for NER, accuracy for sentiment)."""

    epoch: int | str
    train_loss: float | str
    dev: dict[str, float]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EpochRow:
        """From a history row of :func:`training.loop.train`: ``{"epoch", "train_loss", <split>: score, …}``."""
        dev = {k: v for k, v in row.items() if k not in ("epoch", "train_loss")}
        return cls(epoch=row["epoch"], train_loss=row["train_loss"], dev=dev)


def history_rows(rows: list[dict]) -> list[EpochRow]:
    return [EpochRow.from_row(row) for row in rows]


class PRFScore(_Report):
    precision: float
    recall: float
    f1: float
    support: int  # gold count


class SentimentScore(_Report):
    accuracy: float
    macro_f1: float
    labels: dict[str, PRFScore]
    count: int


class Latency(_Report):
    """Milliseconds for one sentence through ONNX Runtime, 1 intra-op thread, tokenisation included."""

    median: float
    p90: float
    chars: int


class Evaluation(_Report):
    """What the ship step measured: each dev split scored through the serving model core with the FP32
    export and with the shipped INT8 model, the INT8 latency, and the files' sizes."""

    scores: dict[str, dict[Literal["fp32", "int8"], Any]]  # split → variant → NER labels' PRF or SentimentScore
    latency_ms: Latency
    sizes: dict[str, int]
    fp32_bytes: int


class NerEvaluation(Evaluation):
    scores: dict[str, dict[Literal["fp32", "int8"], dict[str, PRFScore]]]


class SentimentEvaluation(Evaluation):
    scores: dict[str, dict[Literal["fp32", "int8"], SentimentScore]]


class LexiconStats(_Report):
    candidates: int
    usable: int
    gazetteer: int = 0
    stored: int
    collisions: int


class Distillation(_Report):
    teachers: int
    reused: list[str]
    teacher_seeds: list[int]
    teacher_histories: list[list[EpochRow]]
    loss: Literal["emissions", "crf"]
    temperature: float | None  # with the CRF loss
    weight: float
    transfer_text: str
    transfer_sequences: int
    taught_sequences: int | None = None  # teachers that are model directories: the sequences they read


class SelfTraining(_Report):
    unlabelled: str
    teacher_history: list[EpochRow]


class LinearBranch(_Report):
    """The sentiment recipe's linear branch and how the ensemble was picked."""

    config: dict[str, Any]
    C: float
    C_trials: list[dict[str, float]]
    live_buckets: int
    ensemble: dict[str, Any]  # mode, alpha, accuracy, log_loss
    ensemble_trials: list[dict[str, Any]]
    validation: dict[str, float]  # cnn, linear, ensemble
    branches: dict[str, dict[str, float]]  # split → cnn_fp32, cnn_int8, linear, ensemble_numpy
    seconds: float
    architecture: str


class Pretraining(_Report):
    texts: int
    tokens: int
    epochs: int
    history: list[dict[str, int | float]]  # epoch, loss, masked_accuracy
    seconds: float
    reused: str | None = None


class TrainingReport(_Report):
    """What both recipes report."""

    task: Literal["ner", "sentiment"]
    config: dict[str, Any]  # the network's config (NerConfig / SentimentConfig)
    parameters: int
    embedding_init: str
    train_rows: int
    epochs: int
    history: list[EpochRow]
    train_seconds: float
    total_seconds: float
    threads: int
    evaluation: Evaluation

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2), encoding="utf-8")


class NerReport(TrainingReport):
    task: Literal["ner"] = "ner"
    evaluation: NerEvaluation
    lexicon: LexiconStats | None
    gazetteer: str
    weight_average_decay: float
    self_training: SelfTraining | None
    distillation: Distillation | None
    people_daily_names: int
    train_sequences: int
    org_convention: str
    org_spans_normalised: int
    location_prefix_augmented_rows: int


class SentimentReport(TrainingReport):
    task: Literal["sentiment"] = "sentiment"
    evaluation: SentimentEvaluation
    validation_rows: int
    linear: LinearBranch | None
    pretraining: Pretraining | None
    resumed_from: str | None
    train_max_tokens: int = Field(description="training texts were cut to this many tokens")


# ---------------------------------------------------------------- the encoder recipes (training.encoder)


class FitEval(_Report):
    """One evaluation of a row-budget fine-tune: rows and steps so far, the mean of the last 200 losses,
    the dev score the best state is picked by, and the minutes over all sittings."""

    rows: int
    step: int
    loss: float | None
    dev: float
    minutes: float


class FitHistory(_Report):
    """A fine-tune's record (``history.json``): its evaluations, its config, and whether the budget was
    reached (``finished`` is false when a sitting ended at ``max_minutes`` first)."""

    evals: list[FitEval]
    config: dict[str, Any]  # the FinetuneConfig
    best_dev: float
    train_minutes: float
    finished: bool
    mix: dict[str, int] = Field(default_factory=dict)  # training rows by source
    dev_rows: int | None = None  # NER: dev rows per split scored at each evaluation
    sitting_minutes: float | None = None
    warm_start: str | None = None  # the model directory a continued fine-tune started from

    @property
    def best(self) -> FitEval:
        """The evaluation whose state is ``best.pt`` (the first with the best score)."""
        return next(e for e in self.evals if e.dev == self.best_dev)

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2, exclude_none=True) + "\n", encoding="utf-8")


class LinearFit(_Report):
    C: float
    C_trials: list[dict[str, float]]
    live_buckets: int


class EncoderEnsemble(_Report):
    """How the encoder sentiment model's n-gram branch and ensemble were picked, and its graph's sizes."""

    validation_rows: int
    ngram_fit_rows: int
    linear: LinearFit
    linear_config: dict[str, Any]
    ensemble: dict[str, Any]  # mode, alpha, accuracy, log_loss
    ensemble_trials: list[dict[str, Any]]
    validation: dict[str, float]  # encoder, linear, ensemble
    fp32_graph_vs_numpy_max_abs_prob_diff: float
    size_mb: dict[str, float]  # fp32, int8
    build_seconds: float


class ServedLatency(_Report):
    """Milliseconds per sentence, one ONNX Runtime thread, one text per call."""

    median: float
    p95: float
    mean_chars: float | None = None


class ServedCost(_Report):
    """Model directories side by side: latency, the peak RSS of a process serving each, directory size."""

    latency_ms_1_thread: dict[str, ServedLatency]
    rss_mb: dict[str, float]
    size_mb: dict[str, float]


class SentimentComparison(ServedCost):
    """Sentiment model directories (and the TF-IDF + LR reference) on every dev split: accuracy."""

    accuracy: dict[str, dict[str, float]]  # split → model → accuracy
    rows: dict[str, int]


class NerComparison(ServedCost):
    """NER model directories on every dev row: entity micro P/R/F1 and the seconds in batches of 16."""

    f1: dict[str, dict[str, dict[str, int | float]]]  # split → model → rows, precision, recall, f1, support, …


class NerEnsembleReport(_Report):
    """How the NER ensemble's weight was picked (dev F1 of each weight tried) and how it compares."""

    weight: float  # on the first member (the e5 tier)
    grid: dict[str, dict[str, float]]  # weight → split → entity micro F1, every dev row
    id_map: dict[str, int]  # the first member's pieces: special, character, unknown
    scores: NerComparison  # ensemble, e5, cnn


class NerExport(_Report):
    """The encoder NER export: entity micro F1 of the INT8 directory and of the same over its FP32 graph."""

    export_seconds: float
    dev_f1: dict[str, dict[str, dict[str, int | float]]]  # split → int8/fp32 → rows, f1, …
