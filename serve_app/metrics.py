"""zhserve's own Prometheus metrics, exported through Ray's metrics agent (as ``ray_zhserve_*``)
beside Serve's request, latency, queue and batch metrics. Created inside the replica, never at
import time."""

from __future__ import annotations

from collections.abc import Sequence

from ray.serve.metrics import Counter, Histogram

from serve_app.schemas import AnalyzeResponse

WINDOW_BOUNDARIES = [1.0, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]
CHAR_BOUNDARIES = [50.0, 200, 1_000, 5_000, 20_000, 50_000, 100_000, 200_000]


class IngressMetrics:
    """What the ingress saw: characters analysed, windows fanned out, entities and verdicts."""

    def __init__(self) -> None:
        self.characters = Counter("zhserve_characters", description="Characters analysed, by task.", tag_keys=("task",))
        self.document_chars = Histogram(
            "zhserve_document_characters",
            description="Length of each analysed text in characters.",
            boundaries=CHAR_BOUNDARIES,
        )
        self.windows = Histogram(
            "zhserve_windows_per_document",
            description="Model windows (NER) or units (sentiment) one text was split into.",
            boundaries=WINDOW_BOUNDARIES,
            tag_keys=("task",),
        )
        self.entities = Counter("zhserve_entities", description="Entities returned, by label.", tag_keys=("label",))
        self.verdicts = Counter(
            "zhserve_sentiment_verdicts", description="Document sentiment labels returned.", tag_keys=("label",)
        )

    def observe(self, text: str, windows: dict[str, int], result: AnalyzeResponse) -> None:
        self.document_chars.observe(len(text))
        for task, count in windows.items():
            self.characters.inc(len(text), tags={"task": task})
            self.windows.observe(count, tags={"task": task})
        if result.ner is not None:
            counts: dict[str, int] = {}
            for entity in result.ner.entities:
                counts[entity.label] = counts.get(entity.label, 0) + 1
            for label, count in counts.items():
                self.entities.inc(count, tags={"label": label})
        if result.sentiment is not None:
            self.verdicts.inc(tags={"label": result.sentiment.label})


def window_counts(ner_windows: Sequence[object] | None, sentiment_units: Sequence[object] | None) -> dict[str, int]:
    """``{task: number of windows}`` for the tasks that ran (``None`` = task not requested)."""
    counts = {}
    if ner_windows is not None:
        counts["ner"] = len(ner_windows)
    if sentiment_units is not None:
        counts["sentiment"] = len(sentiment_units)
    return counts
