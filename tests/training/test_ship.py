"""The ship step: a trained network becomes a model directory the serving core loads (checksums checked),
scored on the dev rows through that core exactly as ``zhserve-eval --model-dir`` scores it, with the typed
report written beside the run and rendered as the model card."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from deployments.runtime.model_dir import Manifest, ModelDir, OnnxSpec, TokenizerSpec  # noqa: E402
from tests.training.test_models import SMALL  # noqa: E402
from training import data as D  # noqa: E402
from training.evaluate import CorePredictor, evaluate  # noqa: E402
from training.model_card import render  # noqa: E402
from training.ner_model import CRF, NerConfig, NerNet  # noqa: E402
from training.report import EpochRow, NerReport, SentimentReport  # noqa: E402
from training.sentiment_model import SentimentConfig, SentimentNet  # noqa: E402
from training.ship import EXPERIMENTS, ShipSpec, ship  # noqa: E402

VOCAB = Path(__file__).resolve().parents[2] / "models" / "sentiment" / "vocab.txt"
SENTIMENT_DEV = {
    "review": [
        {"text": "这家酒店的服务很好，房间也很干净。", "label": "positive"},
        {"text": "质量太差了，再也不买了", "label": "negative"},
        {"text": "还行吧", "label": "positive"},
    ]
}
NER_DEV = {
    "news": [
        {"text": "马云在杭州会见了李明。", "entities": [{"start": 0, "end": 2, "label": "PER"}]},
        {"text": "北京大学位于北京。", "entities": [{"start": 0, "end": 4, "label": "ORG"}]},
    ]
}
HISTORY = [EpochRow(epoch=1, train_loss=0.5, dev={"review": 0.5})]


def vocab_size() -> int:
    return sum(1 for _ in VOCAB.open(encoding="utf-8"))


def model_dir_for(tmp_path: Path) -> tuple[Path, Path]:
    out, run_dir = tmp_path / "model", tmp_path / "run"
    out.mkdir()
    run_dir.mkdir()
    shutil.copy(VOCAB, out / "vocab.txt")
    return out, run_dir


def manifest(task: str, labels: list[str], output: str, **extra) -> Manifest:  # type: ignore[no-untyped-def]
    return Manifest(
        name=f"test-{task}",
        version="0.0.1",
        task=task,
        architecture="tiny",
        labels=labels,
        max_seq_length=64,
        tokenizer=TokenizerSpec(vocab="vocab.txt", lowercase=True),
        onnx=OnnxSpec(model="model.onnx", inputs=["input_ids", "attention_mask"], output=output),
        quantization="int8-weight-only",
        provenance={"source": "trained", "seed": 1, "config": {"settings": {"seed": 1}}},
        **extra,
    )


def test_a_sentiment_network_ships_as_a_directory_the_serving_core_scores(tmp_path) -> None:
    out, run_dir = model_dir_for(tmp_path)
    torch.manual_seed(0)
    net = SentimentNet(SentimentConfig(vocab_size=vocab_size(), dilations=[1, 2], **SMALL)).eval()
    spec = ShipSpec(
        network=net,
        manifest=manifest("sentiment", list(D.SENTIMENT_LABELS), "logits"),
        out=out,
        run_dir=run_dir,
        dev=SENTIMENT_DEV,
        sources={"reviews.jsonl": "train"},
        command="zhserve-train sentiment",
        threads=1,
    )

    def report(evaluation):  # type: ignore[no-untyped-def]
        return SentimentReport(
            config=net.config.to_dict(),
            parameters=1,
            embedding_init="random",
            train_rows=3,
            epochs=1,
            history=HISTORY,
            train_seconds=1.0,
            total_seconds=2.0,
            threads=1,
            evaluation=evaluation,
            validation_rows=0,
            linear=None,
            pretraining=None,
            resumed_from=None,
            train_max_tokens=64,
        )

    written, shipped = ship(spec, report)
    assert set(written.files) == {"model.onnx", "vocab.txt"}
    assert written.provenance["config"] == {"settings": {"seed": 1}}
    ModelDir.load(out)  # every checksum matches
    core = evaluate(
        SENTIMENT_DEV["review"], "sentiment", CorePredictor.from_model_dir(out, "sentiment", threads=1, batch_size=2)
    )
    scores = shipped.evaluation.scores["review"]
    assert scores["int8"].model_dump() == core["scores"]
    assert scores["fp32"].count == 3
    assert (run_dir / "sentiment_fp32.onnx").is_file()
    assert set(shipped.evaluation.sizes) == {"manifest.json", "model.onnx", "vocab.txt"}
    # The report round-trips through its JSON, and the card is rendered from it.
    again = SentimentReport.model_validate_json((run_dir / "sentiment_report.json").read_text(encoding="utf-8"))
    assert again == shipped
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    experiments = EXPERIMENTS / "sentiment.md"
    assert card == render(written, shipped, spec.sources, command=spec.command, experiments_file=experiments)
    assert card.startswith("# test-sentiment 0.0.1\n")
    assert f"| accuracy | {scores['fp32'].accuracy:.4f} | {scores['int8'].accuracy:.4f} |" in card
    assert "- command: `zhserve-train sentiment` (seed 1), 1 epochs, 3 training rows, CPU, 1 threads" in card


def test_a_ner_network_ships_with_its_crf(tmp_path) -> None:
    out, run_dir = model_dir_for(tmp_path)
    labels = D.bioes_labels()
    torch.manual_seed(0)
    config = NerConfig(vocab_size=vocab_size(), num_tags=len(labels), dilations=[1, 2], lexicon_lengths=[], **SMALL)
    net, crf = NerNet(config).eval(), CRF(labels)
    spec = ShipSpec(
        network=net,
        manifest=manifest("ner", labels, "emissions", tag_scheme="BIOES", decoder="crf", crf="crf.npz"),
        out=out,
        run_dir=run_dir,
        dev=NER_DEV,
        sources={},
        command="zhserve-train ner",
        threads=1,
        crf=crf.export_arrays(),
    )

    def report(evaluation):  # type: ignore[no-untyped-def]
        return NerReport(
            config=config.to_dict(),
            parameters=1,
            embedding_init="random",
            train_rows=2,
            epochs=1,
            history=HISTORY,
            train_seconds=1.0,
            total_seconds=2.0,
            threads=1,
            evaluation=evaluation,
            lexicon=None,
            gazetteer="training",
            weight_average_decay=0.0,
            self_training=None,
            distillation=None,
            people_daily_names=0,
            train_sequences=2,
            org_convention="corpus",
            org_spans_normalised=0,
            location_prefix_augmented_rows=0,
        )

    written, shipped = ship(spec, report)
    assert set(written.files) == {"crf.npz", "model.onnx", "vocab.txt"}
    core = evaluate(NER_DEV["news"], "ner", CorePredictor.from_model_dir(out, "ner", threads=1, batch_size=2))
    int8 = {label: score.model_dump() for label, score in shipped.evaluation.scores["news"]["int8"].items()}
    assert int8 == core["scores"]
    assert shipped.evaluation.scores["news"]["fp32"]["micro"].support == 2
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "| micro |" in card and "## Latency" in card
