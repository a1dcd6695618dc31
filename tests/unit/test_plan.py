"""Planning without models or Ray: texts become windows, tokenised once per distinct tokenizer."""

from __future__ import annotations

from typing import Any

import pytest

from serve_app.errors import EmptyTextError
from serve_app.plan import Planner, PlanSettings, ServedModel, has_visible_character
from serve_app.schemas import Task
from tests.support.fake_ingress import FakeModels

SETTINGS = PlanSettings()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[Task, ServedModel]:
    return FakeModels(tmp_path_factory.mktemp("models")).served()


def test_a_text_with_nothing_to_analyse_is_refused(served: dict[Task, ServedModel]) -> None:
    for text in ["", "  \n", "\u200b\u200b", "\x00"]:
        assert not has_visible_character(text)
        with pytest.raises(EmptyTextError):
            Planner(served).plan(text, ["ner"], SETTINGS)


def test_each_task_gets_windows_over_the_whole_text(served: dict[Task, ServedModel]) -> None:
    text = "马云在杭州。腾讯公司好。差。"
    plan = Planner(served).plan(text, ["sentiment", "ner"], SETTINGS)
    assert list(plan.tasks) == ["sentiment", "ner"]  # the order asked for
    assert plan.window_counts() == {"sentiment": 1, "ner": 3}
    ner = plan.tasks["ner"]
    assert [(w.start, w.end) for w in ner.windows] == [(0, 6), (6, 12), (12, 14)]
    assert [len(row) for row in ner.rows()] == [w.token_end - w.token_start for w in ner.windows]
    assert ner.token_count() == sum(len(row) for row in ner.rows())


def test_models_with_one_tokenizer_share_one_encoding(
    served: dict[Task, ServedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same tokenizer file and settings: one key, one encoding per text.
    same = {task: ServedModel(m.manifest, served["ner"].tokenizer, "shared") for task, m in served.items()}
    calls: list[int] = []
    original = served["ner"].tokenizer.encode

    def counting(texts: list[str]) -> Any:
        calls.append(len(texts))
        return original(texts)

    monkeypatch.setattr(served["ner"].tokenizer, "encode", counting)
    Planner(same).plan("马云在杭州", ["ner", "sentiment"], SETTINGS)
    assert calls == [1]
    assert served["ner"].tokenizer_key != served["sentiment"].tokenizer_key  # different vocabularies here
