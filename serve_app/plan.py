"""Planning: a text and its tasks become windows of token ids, the text tokenised once per
distinct tokenizer (``serve_app.chunking`` plans the windows on those tokens). Pure: no Ray, no
handles; what a window's model is sent is ``TaskPlan.rows``.
"""

from __future__ import annotations

import asyncio
import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from deployments.runtime.model_dir import Manifest, ModelDir
from deployments.runtime.tokenizer import Tokenized, Tokenizer
from serve_app import chunking
from serve_app.errors import EmptyTextError
from serve_app.schemas import Task

# Texts up to this many characters are planned on the event loop; longer ones in a thread
# (tokenising 200,000 characters takes tens of milliseconds).
INLINE_PLAN_CHARS = 4_000


@dataclass(frozen=True)
class ServedModel:
    """What the ingress needs of a model: its manifest (names, labels, limits) and tokenizer."""

    manifest: Manifest
    tokenizer: Tokenizer
    # Equal keys mean identical tokenisation, so one encoding of a text serves both models.
    tokenizer_key: str

    @classmethod
    def from_dir(cls, path: str) -> ServedModel:
        model_dir = ModelDir.load(path, verify_checksums=False)
        spec = model_dir.manifest.tokenizer
        digest = hashlib.sha256(model_dir.file(spec.artifact).read_bytes()).hexdigest()
        key = f"{spec.model_dump_json()}:{digest}"
        return cls(model_dir.manifest, Tokenizer.from_model_dir(model_dir), key)

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    @property
    def max_tokens(self) -> int:
        return self.manifest.max_seq_length

    def overlap(self, configured: int) -> int:
        """The configured overlap, capped at half a window so a window always moves forward."""
        return min(configured, (self.max_tokens - chunking.NUM_SPECIAL_TOKENS) // 2)


@dataclass(frozen=True)
class TaskPlan:
    """One task's windows over one text, and the text's tokens for that task's model."""

    task: Task
    model: ServedModel
    tokens: Tokenized
    windows: list[chunking.Window]

    def rows(self) -> list[np.ndarray]:
        ids = self.tokens.ids
        return [ids[window.token_start : window.token_end] for window in self.windows]

    def token_count(self) -> int:
        """Tokens the model is sent for this plan (overlaps counted in every window)."""
        return sum(window.token_end - window.token_start for window in self.windows)


@dataclass(frozen=True)
class DocumentPlan:
    text: str
    tasks: dict[Task, TaskPlan]

    def window_counts(self) -> dict[str, int]:
        return {task: len(plan.windows) for task, plan in self.tasks.items()}


@dataclass(frozen=True)
class PlanSettings:
    ner_context: Literal["sentence", "window"] = "sentence"
    overlap_tokens: int = 32


def is_text_character(char: str) -> bool:
    """Whether ``char`` is something to analyse: anything but a control (Cc), format (Cf) or
    separator (Z*) character and the 66 noncharacters. Private use (Co) counts, and so does a code
    point this Python's Unicode tables call unassigned (Cn): Python 3.11 knows Unicode 14, so the
    CJK of Extensions H and I (Unicode 15, 15.1: U+31350 ...) is Cn here though it is Lo today."""
    category = unicodedata.category(char)
    if category[0] not in "CZ":
        return True
    if category == "Co":
        return True
    if category != "Cn":
        return False
    code = ord(char)
    return not (0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE)  # noncharacters are never text


def has_visible_character(text: str) -> bool:
    """Whether ``text`` has a character to analyse (:func:`is_text_character`). Stops at the
    first one, so an ordinary text costs one character."""
    return any(is_text_character(char) for char in text)


class Planner:
    """Turns a text and its tasks into windows, tokenising the text once per distinct tokenizer."""

    def __init__(self, models: dict[Task, ServedModel]) -> None:
        self.models = models

    def plan(self, text: str, tasks: Sequence[Task], settings: PlanSettings, *, field: str = "text") -> DocumentPlan:
        if not has_visible_character(text):  # whatever a model's tokenizer makes of it (e5 gives "▁"/<unk>)
            raise EmptyTextError(
                f"{field} has nothing to analyse: no letters, digits, CJK characters or symbols "
                "(only whitespace, control or zero-width characters)"
            )
        encodings: dict[str, Tokenized] = {}
        plans: dict[Task, TaskPlan] = {}
        for task in tasks:
            model = self.models[task]
            tokens = encodings.get(model.tokenizer_key)
            if tokens is None:
                tokens = encodings[model.tokenizer_key] = model.tokenizer.encode([text])[0]
            if len(tokens) == 0:
                raise EmptyTextError(
                    f"{field} has nothing to analyse: no letters, digits, CJK characters or symbols "
                    "(only whitespace, control or zero-width characters)"
                )
            overlap = model.overlap(settings.overlap_tokens)
            if task == "sentiment":
                windows = chunking.sentiment_units(text, tokens, max_tokens=model.max_tokens, overlap_tokens=overlap)
            elif settings.ner_context == "sentence":
                windows = chunking.sentence_units(text, tokens, max_tokens=model.max_tokens, overlap_tokens=overlap)
            else:
                windows = chunking.plan_windows(text, tokens, max_tokens=model.max_tokens, overlap_tokens=overlap)
            plans[task] = TaskPlan(task, model, tokens, windows)
        return DocumentPlan(text, plans)

    async def plan_async(
        self, text: str, tasks: Sequence[Task], settings: PlanSettings, *, field: str = "text"
    ) -> DocumentPlan:
        if len(text) <= INLINE_PLAN_CHARS:
            return self.plan(text, tasks, settings, field=field)
        return await asyncio.to_thread(self.plan, text, tasks, settings, field=field)
