from __future__ import annotations

import pytest

from training.metrics import entity_scores, sentiment_scores


def test_entity_scores_per_label_and_micro() -> None:
    gold = [[(0, 2, "PER"), (3, 5, "LOC")], [(0, 4, "ORG")]]
    predicted = [[(0, 2, "PER"), (3, 5, "ORG")], [(0, 4, "ORG"), (5, 6, "PER")]]
    scores = entity_scores(gold, predicted)
    assert scores["PER"].precision == pytest.approx(0.5)
    assert scores["PER"].recall == pytest.approx(1.0)
    assert scores["LOC"].recall == 0.0 and scores["LOC"].support == 1
    assert scores["ORG"].precision == pytest.approx(0.5)
    micro = scores["micro"]
    assert micro.precision == pytest.approx(2 / 4)
    assert micro.recall == pytest.approx(2 / 3)
    assert micro.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert micro.support == 3


def test_entity_scores_boundary_must_match_exactly() -> None:
    scores = entity_scores([[(0, 3, "PER")]], [[(0, 2, "PER")]])
    assert scores["micro"].f1 == 0.0


def test_entity_scores_empty_and_length_mismatch() -> None:
    assert entity_scores([[]], [[]])["micro"].f1 == 0.0
    with pytest.raises(ValueError):
        entity_scores([[]], [])


def test_sentiment_scores() -> None:
    scores = sentiment_scores(
        ["positive", "positive", "negative", "negative"], ["positive", "negative", "negative", "negative"]
    )
    assert scores["accuracy"] == 0.75
    assert scores["labels"]["positive"]["recall"] == 0.5
    assert scores["labels"]["negative"]["precision"] == pytest.approx(0.6667, abs=1e-4)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2, abs=1e-4)
