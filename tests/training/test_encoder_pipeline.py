"""``zhserve-train encoder --models ner``: the two NER stages run in order, the second warm-started from the
first's exported model, each skipped once done; an unfinished sitting stops with exit status 3 and the
next sitting continues. The fine-tune, export and scoring are replaced by recorders (their own tests
cover them); the stage logic is what runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from training.encoder import ner, pipeline
from training.report import FitEval, FitHistory


class Scored(Exception):
    """Raised where the pipeline scores the shipped model: both stages are done by then."""


def scored(*_: Any, **__: Any) -> None:
    raise Scored


class Recorder:
    def __init__(self, unfinished: set[str] | None = None) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.unfinished = unfinished or set()

    def finetune(self, data_dir: str, out: Path, config: Any, *, warm_start: Path | None, stage: str, **_: Any):
        self.calls.append(("finetune", stage, warm_start))
        finished = stage not in self.unfinished
        history = FitHistory(
            evals=[FitEval(rows=10, step=1, loss=1.0, dev=0.5, minutes=0.1)],
            config={"budget_rows": config.budget_rows},
            best_dev=0.5,
            train_minutes=0.1,
            finished=finished,
            warm_start=str(warm_start) if warm_start else None,
        )
        (out / stage).mkdir(parents=True, exist_ok=True)
        history.write(out / stage / "history.json")
        return history

    def export(self, out: Path, *, model_dir: Path, stage: str, version: str, **_: Any):
        self.calls.append(("export", stage, model_dir))
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / "manifest.json").write_text(json.dumps({"version": version}))
        (out / stage / "export.json").write_text(json.dumps({"export_seconds": 1.0, "dev_f1": {}}))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(ner, "finetune", recorder.finetune)
    monkeypatch.setattr(ner, "export", recorder.export)
    monkeypatch.setattr(ner, "score", scored)
    monkeypatch.setattr(
        pipeline.ModelDir,
        "load",
        lambda path: type(
            "Loaded", (), {"manifest": type("M", (), json.loads((Path(path) / "manifest.json").read_text()))}
        ),
    )
    return recorder


def run(tmp_path: Path) -> int:
    (tmp_path / "run").mkdir(exist_ok=True)
    for name in ("kept_ids.npy", "tokenizer.json"):  # prepared already
        (tmp_path / "run" / name).write_text("")
    return pipeline.main(["--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "models"), "--models", "ner"])


def test_the_second_stage_starts_from_the_first_stages_model(recorder: Recorder, tmp_path: Path) -> None:
    with pytest.raises(Scored):
        run(tmp_path)
    stage_one = tmp_path / "run" / f"ner-{ner.VERSION}"
    assert recorder.calls == [
        ("finetune", "ner", None),
        ("export", "ner", stage_one),
        ("finetune", "ner-continued", stage_one),
        ("export", "ner-continued", tmp_path / "models" / ner.MODEL_DIR_NAME),
    ]
    recorder.calls.clear()
    with pytest.raises(Scored):  # all done: nothing is trained or exported again
        run(tmp_path)
    assert recorder.calls == []


def test_an_unfinished_sitting_stops_and_the_next_continues(recorder: Recorder, tmp_path: Path) -> None:
    recorder.unfinished = {"ner-continued"}
    assert run(tmp_path) == pipeline.EXIT_UNFINISHED
    assert [c[:2] for c in recorder.calls] == [("finetune", "ner"), ("export", "ner"), ("finetune", "ner-continued")]
    recorder.calls.clear()
    recorder.unfinished = set()
    with pytest.raises(Scored):
        run(tmp_path)
    assert [c[:2] for c in recorder.calls] == [("finetune", "ner-continued"), ("export", "ner-continued")]
