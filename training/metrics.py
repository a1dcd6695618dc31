"""Entity-level NER scores and sentiment scores (pure Python; no torch)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Span = tuple[int, int, str]  # (start, end, label), code points, end exclusive


@dataclass(frozen=True)
class PRF:
    precision: float
    recall: float
    f1: float
    support: int  # gold count

    def to_dict(self) -> dict[str, float | int]:
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "support": self.support,
        }


def _prf(tp: int, predicted: int, gold: int) -> PRF:
    precision = tp / predicted if predicted else 0.0
    recall = tp / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PRF(precision, recall, f1, gold)


def entity_scores(gold: Sequence[Iterable[Span]], predicted: Sequence[Iterable[Span]]) -> dict[str, PRF]:
    """Exact-match entity precision/recall/F1 per label and ``"micro"`` over all labels."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold rows but {len(predicted)} predicted rows")
    counts: dict[str, list[int]] = {}  # label -> [tp, predicted, gold]
    for gold_spans, predicted_spans in zip(gold, predicted, strict=True):
        gold_set, predicted_set = set(gold_spans), set(predicted_spans)
        for span in gold_set:
            counts.setdefault(span[2], [0, 0, 0])[2] += 1
        for span in predicted_set:
            entry = counts.setdefault(span[2], [0, 0, 0])
            entry[1] += 1
            if span in gold_set:
                entry[0] += 1
    scores = {label: _prf(*counts[label]) for label in sorted(counts)}
    totals = [sum(c[i] for c in counts.values()) for i in range(3)]
    scores["micro"] = _prf(*totals)
    return scores


def sentiment_scores(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, float | dict]:
    """Accuracy, per-label P/R/F1 and macro F1."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    labels = sorted(set(gold) | set(predicted))
    per_label = {}
    for label in labels:
        tp = sum(1 for g, p in zip(gold, predicted, strict=True) if g == p == label)
        per_label[label] = _prf(tp, sum(p == label for p in predicted), sum(g == label for g in gold))
    accuracy = sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold) if gold else 0.0
    macro = sum(s.f1 for s in per_label.values()) / len(per_label) if per_label else 0.0
    return {
        "accuracy": round(accuracy, 4),
        "macro_f1": round(macro, 4),
        "labels": {label: s.to_dict() for label, s in per_label.items()},
        "count": len(gold),
    }
