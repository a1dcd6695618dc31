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
