"""Typed configuration: the app builder's arguments and the ingress's live ``user_config``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deployments.batching import BatchConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_NER_MODEL = REPO_ROOT / "models" / "ner-ensemble"  # the default tier (models/ner: the CNN alone)
EMBEDDED_SENTIMENT_MODEL = REPO_ROOT / "models" / "sentiment-e5"  # the default tier (models/sentiment: the CNN)
UI_DIR = REPO_ROOT / "ui"


class IngressConfig(BaseModel):
    """The ingress's ``user_config``: limits and timeouts, applied live by ``reconfigure()``."""

    model_config = ConfigDict(extra="forbid")

    max_text_chars: int = Field(default=200_000, ge=1, description="Characters one text may have")
    max_batch_texts: int = Field(default=256, ge=1, description="Texts one /v1/batch request may carry")
    max_batch_chars: int = Field(default=1_000_000, ge=1, description="Characters in one /v1/batch request")
    max_body_bytes: int = Field(default=8 << 20, ge=1024, description="Bytes of one request body")
    request_timeout_s: float = Field(default=120.0, gt=0, description="Time limit of one request")
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Time limit for a request body to arrive (from the first byte read): a client trickling its "
            "body holds a connection and a task no longer than this, then gets 408"
        ),
    )
    window_overlap_tokens: int = Field(default=32, ge=0, description="Overlap of windows cut from long sentences")
    ner_context: Literal["sentence", "window"] = Field(
        default="sentence",
        description=(
            "What the NER model sees of a document: each sentence alone ('sentence', measured more "
            "accurate for models trained on sentences, and identical to analysing sentence by "
            "sentence) or sentences packed into full windows ('window')"
        ),
    )
    window_group_size: int = Field(
        default=64, ge=1, le=256, description="Most windows one model call carries (of any requests)"
    )
    model_calls_per_replica: int = Field(
        default=2,
        ge=1,
        le=64,
        description=(
            "Most calls outstanding per model replica (one computing, one queued keeps a replica busy); "
            "further windows queue in the ingress and travel together in the next call"
        ),
    )
    no_replica_wait_s: float = Field(
        default=15.0,
        ge=0,
        description=(
            "How long requests wait for a model that has no running replica (a lost replica is usually "
            "replaced within seconds); after that they get 503 models_not_ready at once until one runs"
        ),
    )
    api_key_file: str | None = Field(
        default=None,
        description=(
            "File holding the API key that /v1/* requires as 'Authorization: Bearer <key>' (e.g. a mounted "
            "Kubernetes Secret; re-read on every reconfigure). Unset: $ZHSERVE_API_KEY_FILE, then $ZHSERVE_API_KEY; "
            "none of them: no key. The key itself never goes in a config file"
        ),
    )


class AppArgs(BaseModel):
    """Arguments of ``build_app``: from ``serve_config.yaml``'s ``args:`` or ``serve run … key=value``.

    Relative model paths are resolved against the directory the builder runs in, so
    ``serve run serve_app.app:build_app ner_model=runs/raner`` means what it says.
    """

    model_config = ConfigDict(extra="forbid")

    ner_model: Path = Field(default=EMBEDDED_NER_MODEL, description="NER model directory")
    sentiment_model: Path = Field(default=EMBEDDED_SENTIMENT_MODEL, description="Sentiment model directory")
    intra_op_threads: int = Field(
        default=1, ge=1, le=64, description="ONNX Runtime threads per model replica (match its num_cpus)"
    )
    row_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Rows of a batch computed at once by a row-by-row (dynamic INT8, e.g. e5) model replica, each "
        "its own ONNX call on its own thread; models run as padded batches ignore it",
    )
    ui_dir: Path = Field(default=UI_DIR, description="Static web UI served at /")
    cors_allow_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser (CORS); empty: CORS off, same origin only",
    )
    handle_serialization: Literal["pickle", "cloudpickle"] = Field(
        default="pickle",
        description="How the ingress's model calls are serialised: the calls carry plain arrays of importable "
        "classes, which the standard pickle handles without cloudpickle's per-object module search",
    )
    ner_config: BatchConfig = Field(
        default_factory=BatchConfig,
        description="The NER deployment's initial user_config (serve_config.yaml's user_config overrides it)",
    )
    sentiment_config: BatchConfig = Field(
        default_factory=BatchConfig,
        description="The sentiment deployment's initial user_config (serve_config.yaml's overrides it)",
    )
    ingress_config: IngressConfig = Field(
        default_factory=IngressConfig,
        description="The ingress's initial user_config (serve_config.yaml's user_config overrides it)",
    )

    @field_validator("ner_model", "sentiment_model", "ui_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        """A relative path is taken from the working directory when it exists there, otherwise
        from the zhserve checkout: `serve deploy serve_config.yaml` builds the application in
        the cluster's controller, whose working directory is Ray's, not the caller's."""
        path = path.expanduser()
        if path.is_absolute() or path.exists():
            return path.resolve()
        return (REPO_ROOT / path).resolve()
