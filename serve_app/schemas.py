"""The HTTP API contract (v1): request and response models, and so the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Task = Literal["ner", "sentiment"]
ALL_TASKS: list[Task] = ["ner", "sentiment"]

NER_EXAMPLE = "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。"


def _unique_tasks(tasks: list[Task]) -> list[Task]:
    if not tasks:
        raise ValueError("tasks must name at least one of 'ner', 'sentiment'")
    return list(dict.fromkeys(tasks))


class TextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": NER_EXAMPLE}]})

    text: str = Field(description="The text to analyse; any length up to the configured limit.")


class AnalyzeRequest(TextRequest):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": NER_EXAMPLE, "tasks": ["ner", "sentiment"]}]},
    )

    tasks: list[Task] = Field(default_factory=lambda: list(ALL_TASKS))

    _tasks = field_validator("tasks")(_unique_tasks)


class BatchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"texts": ["服务很贴心，下次还来", NER_EXAMPLE], "tasks": ["ner"]}]},
    )

    texts: list[str] = Field(min_length=1, description="Texts to analyse; results come back in this order.")
    tasks: list[Task] = Field(default_factory=lambda: list(ALL_TASKS))

    _tasks = field_validator("tasks")(_unique_tasks)


class EntityOut(BaseModel):
    text: str = Field(description="Exactly text[start:end] of the request's text.")
    label: str = Field(description="Entity type, e.g. PER, LOC, ORG.")
    start: int = Field(description="Code-point offset of the first character.")
    end: int = Field(description="Code-point offset one past the last character (exclusive).")
    score: float = Field(description="Confidence in [0, 1]: the lowest tag marginal within the span.")


class NerResult(BaseModel):
    entities: list[EntityOut]
    model: str = Field(description="name@version of the model that produced the result.")


class SentenceSentiment(BaseModel):
    start: int
    end: int
    label: Literal["positive", "negative"]
    score: float


class SentimentScores(BaseModel):
    positive: float
    negative: float


class SentimentResultOut(BaseModel):
    label: Literal["positive", "negative"]
    score: float = Field(description="Probability of `label`.")
    scores: SentimentScores
    sentences: list[SentenceSentiment] = Field(
        description=(
            "The units the label was computed from. A text that fits the model's window is one "
            "unit; a longer document is scored sentence by sentence and its label is the "
            "length-weighted mean of the sentence probabilities."
        )
    )
    model: str


class AnalyzeResponse(BaseModel):
    ner: NerResult | None = None
    sentiment: SentimentResultOut | None = None
    elapsed_ms: float | None = None


class BatchResponse(BaseModel):
    results: list[AnalyzeResponse]
    elapsed_ms: float


class ModelDescription(BaseModel):
    task: str
    name: str
    version: str
    model: str = Field(description="name@version")
    labels: list[str]
    entity_types: list[str]
    tag_scheme: str | None
    quantization: str
    max_seq_length: int
    architecture: str
    provenance: dict[str, Any]


class ModelsResponse(BaseModel):
    models: list[ModelDescription]


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    status: Literal["ready"]
    models: dict[str, str]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code (see the route's error responses).")
    message: str = Field(description="What was received and what is allowed.")
    request_id: str | None = Field(default=None, description="The request's id, as in the server's log.")


class ErrorResponse(BaseModel):
    error: ErrorDetail
