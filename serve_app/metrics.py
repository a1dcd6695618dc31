"""zhserve's own Prometheus metrics, exported through Ray's metrics agent (as ``ray_zhserve_*``)
beside Serve's request, latency, queue and batch metrics. Created inside the replica, never at
import time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ray.serve.metrics import Counter, Histogram

if TYPE_CHECKING:
    from serve_app.fanout import Outcome

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

    def observe(self, outcome: Outcome) -> None:
        text = outcome.plan.text
        self.document_chars.observe(len(text))
        for task, count in outcome.plan.window_counts().items():
            self.characters.inc(len(text), tags={"task": task})
            self.windows.observe(count, tags={"task": task})
        ner = outcome.results.get("ner")
        if ner is not None:
            counts: dict[str, int] = {}
            for entity in ner["entities"]:
                counts[entity["label"]] = counts.get(entity["label"], 0) + 1
            for label, count in counts.items():
                self.entities.inc(count, tags={"label": label})
        sentiment = outcome.results.get("sentiment")
        if sentiment is not None:
            self.verdicts.inc(tags={"label": sentiment["label"]})
