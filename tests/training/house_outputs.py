"""The training house's outputs on tiny deterministic settings, written to a folder to compare byte for byte.

    python -m tests.training.house_outputs OUT

Each recipe's shipped artifacts and the figures its loop produces, for a tiny CNN (sentiment and NER, through
``training.ship``) and a tiny e5 encoder (the fine-tune, the sentiment and NER model directories, both cards):
manifests, cards and reports as text, the first ONNX outputs on fixed inputs (FP32 and INT8) as JSON, and the
trained weights as a sha256. Timings are pinned (latency) or dropped (minutes), so two runs on one machine write
the same bytes; ``test_house_outputs`` holds a fresh run against the committed ``golden/house`` folder.
One torch thread, fixed seeds, CPU.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

FIXED_INPUTS = [[2, 10, 11, 12, 13, 3], [2, 14, 15, 3, 0, 0]]  # BERT-Chinese ids: [CLS] … [SEP] [PAD]
E5_INPUTS = [[0, 5, 6, 7, 8, 2], [0, 9, 10, 2, 1, 1]]  # e5 ids: <s> … </s> <pad>


def _weights_sha256(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _onnx_outputs(path: Path, inputs: list[list[int]], pad_id: int) -> list:
    from training.onnx_io import session

    ids = np.asarray(inputs, dtype=np.int64)
    (result,) = session(path, threads=1).run(
        None, {"input_ids": ids, "attention_mask": (ids != pad_id).astype(np.int64)}
    )
    return np.round(result.astype(np.float64), 7).tolist()


def _copy_texts(source: Path, target: Path, names: list[str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(source / name, target / name)


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- the CNN recipes


def cnn_ship(out: Path, work: Path) -> None:
    """Both CNN networks through the ship step (latency pinned): manifest, card, report, ONNX outputs."""
    from tests.training import test_ship as S
    from training import ship as ship_module
    from training.report import Latency

    pinned = Latency(median=1.0, p90=2.0, chars=50)
    experiments = work / "experiments"  # a short stand-in: the card's own sections are what is compared
    experiments.mkdir()
    for task in ("sentiment", "ner"):
        (experiments / f"{task}.md").write_text(f"## Experiments\n\n{task}: none here.\n", encoding="utf-8")
        task_work = work / task
        task_work.mkdir(parents=True)
        with (
            mock.patch.object(ship_module, "median_latency_ms", lambda *a, **k: pinned),
            mock.patch.object(ship_module, "EXPERIMENTS", experiments),
            mock.patch.object(S, "EXPERIMENTS", experiments),
        ):
            test = {
                "sentiment": S.test_a_sentiment_network_ships_as_a_directory_the_serving_core_scores,
                "ner": S.test_a_ner_network_ships_with_its_crf,
            }[task]
            test(task_work)
        model, run = task_work / "model", task_work / "run"
        _copy_texts(model, out / f"cnn_{task}", ["manifest.json", "MODEL_CARD.md"])
        _copy_texts(run, out / f"cnn_{task}", [f"{task}_report.json"])
        _write_json(
            out / f"cnn_{task}" / "onnx_outputs.json",
            {
                "fp32": _onnx_outputs(run / f"{task}_fp32.onnx", FIXED_INPUTS, 0),
                "int8": _onnx_outputs(model / "model.onnx", FIXED_INPUTS, 0),
            },
        )


def cnn_loop(out: Path) -> None:
    """The epoch loop on the test's tiny recipe: its history and the weights it ends with."""
    from tests.training import test_loop as T
    from training import loop

    torch.manual_seed(0)
    net = torch.nn.Linear(1, 1, bias=False)
    recipe = T.Recipe(net, scripted=[0.2, 0.6, 0.4])
    result = loop.train(T.spec(net, 3, batch_rng=random.Random(3)), recipe)
    _write_json(
        out / "cnn_loop.json",
        {
            "history": result.history,
            "best": result.best,
            "best_epoch": result.best_epoch,
            "weights": _weights_sha256(net),
            "best_calls": recipe.best_calls,
        },
    )


# ---------------------------------------------------------------- the encoder recipes


def _tiny_e5():  # type: ignore[no-untyped-def]
    from tests.training.test_encoder_recipes import TINY, char_vocab
    from training.encoder.tokenizer import build_tokenizer

    vocab = char_vocab()
    return TINY, vocab, build_tokenizer(vocab)


def encoder_fit(out: Path, work: Path) -> None:
    """The encoder fine-tune on a tiny classifier: its history (minutes dropped) and the weights it ends with."""
    from tests.training.test_encoder_recipes import TINY, run_fit, tiny_sentiment_examples
    from training.encoder.fit import FinetuneConfig
    from training.encoder.model import Encoder, SentimentClassifier

    torch.manual_seed(1)
    model = SentimentClassifier(Encoder(TINY, vocab_size=40))
    config = FinetuneConfig(batch_size=4, budget_rows=96, eval_every=32, max_minutes=60)
    (work / "fit").mkdir()
    history = run_fit(model, tiny_sentiment_examples(), config, work / "fit").model_dump(exclude_unset=True)
    history.pop("train_minutes")
    for entry in history["evals"]:
        entry.pop("minutes")
    best = SentimentClassifier(Encoder(TINY, vocab_size=40))
    best.load_state_dict(torch.load(work / "fit" / "best.pt"))
    _write_json(
        out / "encoder_fit.json", {"history": history, "weights": _weights_sha256(model), "best": _weights_sha256(best)}
    )


def encoder_sentiment_dir(out: Path, work: Path) -> None:
    """The shipped sentiment directory's writer over a tiny classifier: manifest and ONNX outputs."""
    from training.encoder import ensemble
    from training.encoder.model import QUANTIZED_OPS, Encoder, SentimentClassifier, export_example
    from training.onnx_io import export_onnx, quantize_int8
    from training.report import EncoderEnsemble

    tiny, vocab, tokenizer = _tiny_e5()
    run = work / "e5-sentiment"
    run.mkdir()
    tokenizer.save(str(run / "tokenizer.json"))
    torch.manual_seed(0)
    model = SentimentClassifier(Encoder(tiny, vocab_size=len(vocab.pieces))).eval()
    fp32, int8 = run / "fp32.onnx", run / "int8.onnx"
    export_onnx(model, fp32, output_name="logits", example=export_example(vocab.pad))
    quantize_int8(fp32, int8, op_types=QUANTIZED_OPS)
    report = EncoderEnsemble.model_validate(
        {
            **ENSEMBLE,
            "validation_rows": 12,
            "linear_config": {"vocab_size": len(vocab.pieces), "excluded_ids": [1, 0, 2]},
            "ensemble": {"mode": "prob", "alpha": 0.75, "accuracy": 0.9, "log_loss": 0.3},
        }
    )
    model_dir = run / "sentiment-e5"
    ensemble.write_model_dir(model_dir, out=run, int8=int8, report=report)
    _copy_texts(model_dir, out / "e5_sentiment", ["manifest.json"])
    _write_json(
        out / "e5_sentiment" / "onnx_outputs.json",
        {
            "fp32": _onnx_outputs(fp32, E5_INPUTS, vocab.pad),
            "int8": _onnx_outputs(model_dir / "model.onnx", E5_INPUTS, vocab.pad),
        },
    )


def encoder_ner_dir(out: Path, work: Path) -> None:
    """``training.encoder.ner.export`` over a tiny tagger (the dev scoring pinned): manifest, report, ONNX outputs."""
    from types import SimpleNamespace

    from training.encoder import convert, ner
    from training.encoder.model import Encoder

    tiny, vocab, tokenizer = _tiny_e5()
    run = work / "e5-ner"
    (run / "ner").mkdir(parents=True)
    tokenizer.save(str(run / "tokenizer.json"))
    np.save(run / "kept_ids.npy", np.arange(len(vocab.pieces), dtype=np.int64))
    torch.manual_seed(0)
    model = ner.NerTraining(ner.NerTagger(Encoder(tiny, vocab_size=len(vocab.pieces))))
    with torch.no_grad():
        model.crf.transitions.normal_()  # a CRF with something to export
    torch.save(model.state_dict(), run / "ner" / "best.pt")
    history = {
        "evals": [{"rows": 32, "step": 8, "loss": 3.2, "dev": 0.25, "minutes": 0.1}],
        "config": {"seed": 7, "batch_size": 4},
        "best_dev": 0.25,
        "train_minutes": 0.1,
        "finished": True,
        "mix": {"msra": 3, "cluener_and_weibo": 2},
        "dev_rows": 4,
    }
    (run / "ner" / "history.json").write_text(json.dumps(history))
    pinned = {"news_msra": {"int8": {"rows": 4, "f1": 0.5}, "fp32": {"rows": 4, "f1": 0.5}}}
    model_dir = run / "ner-e5"
    with (
        mock.patch.object(convert, "read_e5_file", lambda _=None: SimpleNamespace(config=tiny)),
        mock.patch.object(ner, "dev_f1", lambda *a, **k: pinned),
    ):
        report = ner.export(run, data_dir="unused", model_dir=model_dir, e5_file=None, log=lambda _: None)
    exported = report.model_dump()
    exported.pop("export_seconds")
    _copy_texts(model_dir, out / "e5_ner", ["manifest.json"])
    _write_json(out / "e5_ner" / "export.json", exported)
    _write_json(
        out / "e5_ner" / "onnx_outputs.json",
        {
            "fp32": _onnx_outputs(run / "ner" / "model.fp32.onnx", E5_INPUTS, vocab.pad),
            "int8": _onnx_outputs(model_dir / "model.onnx", E5_INPUTS, vocab.pad),
        },
    )


SENTIMENT_HISTORY = {
    "evals": [
        {"rows": 6000, "step": 375, "loss": 0.41234, "dev": 0.9125, "minutes": 12.5},
        {"rows": 12000, "step": 750, "loss": 0.30111, "dev": 0.93, "minutes": 25.0},
    ],
    "config": {
        "max_tokens": 96,
        "head_fraction": 0.5,
        "batch_size": 16,
        "learning_rate": 6e-05,
        "head_learning_rate": 0.001,
        "weight_decay": 0.01,
        "warmup_fraction": 0.06,
        "budget_rows": 38700,
        "eval_every": 6000,
        "max_minutes": 80.0,
        "seed": 13,
    },
    "best_dev": 0.93,
    "train_minutes": 25.0,
    "finished": True,
    "mix": {"chnsenticorp_train_and_hotel": 15000, "other_reviews": 6000},
    "sitting_minutes": 25.0,
}
ENSEMBLE = {
    "validation_rows": 3000,
    "ngram_fit_rows": 30000,
    "linear": {
        "C": 4.0,
        "C_trials": [{"C": 2.0, "validation_accuracy": 0.88}, {"C": 4.0, "validation_accuracy": 0.89}],
        "live_buckets": 123456,
    },
    "linear_config": {"vocab_size": 40},
    "ensemble": {"mode": "prob", "alpha": 0.75, "accuracy": 0.93, "log_loss": 0.2},
    "ensemble_trials": [],
    "validation": {"encoder": 0.92, "linear": 0.89, "ensemble": 0.93},
    "fp32_graph_vs_numpy_max_abs_prob_diff": 1e-7,
    "size_mb": {"fp32": 130.2, "int8": 40.1},
    "build_seconds": 100.0,
}
SENTIMENT_SCORES = {
    "accuracy": {
        "review_chnsenticorp": {"tfidf_lr": 0.89, "e5_ensemble": 0.9412, "cnn": 0.9},
        "unseen_fruit": {"tfidf_lr": 0.85, "e5_ensemble": 0.9, "cnn": 0.91},
        "unseen_weibo": {"tfidf_lr": 0.7, "e5_ensemble": 0.8},
    },
    "rows": {"review_chnsenticorp": 1200, "unseen_fruit": 1000, "unseen_weibo": 900},
    "latency_ms_1_thread": {"e5_ensemble": {"median": 9.1, "p95": 20.5}, "cnn": {"median": 1.2, "p95": 2.4}},
    "rss_mb": {"e5_ensemble": 300.5, "cnn": 120.1},
    "size_mb": {"e5_ensemble": 41.0, "cnn": 12.3},
}
NER_HISTORY = {
    "evals": [
        {"rows": 10000, "step": 625, "loss": 5.1234, "dev": 0.81, "minutes": 7.5},
        {"rows": 20000, "step": 1250, "loss": 3.2, "dev": 0.845, "minutes": 15.0},
    ],
    "config": {**SENTIMENT_HISTORY["config"], "learning_rate": 1e-4, "head_learning_rate": 5e-3, "budget_rows": 100000},
    "best_dev": 0.845,
    "train_minutes": 15.0,
    "finished": True,
    "mix": {"msra": 40000, "cluener_and_weibo": 12000},
    "dev_rows": 400,
}
NER_EXPORT = {
    "dev_f1": {
        "news_msra": {"int8": {"rows": 2000, "f1": 0.91}, "fp32": {"rows": 2000, "f1": 0.912}},
        "web_cluener": {"int8": {"rows": 1000, "f1": 0.78}, "fp32": {"rows": 1000, "f1": 0.781}},
    }
}
NER_SCORES = {
    "f1": {
        "news_msra": {
            "e5": {"f1": 0.91, "seconds_batches_of_16": 30.0},
            "cnn": {"f1": 0.93, "seconds_batches_of_16": 5.0},
        },
        "web_cluener": {
            "e5": {"f1": 0.78, "seconds_batches_of_16": 20.0},
            "cnn": {"f1": 0.74, "seconds_batches_of_16": 4.0},
        },
    },
    "latency_ms_1_thread": {
        "e5": {"median": 8.0, "p95": 12.0, "mean_chars": 45.2},
        "cnn": {"median": 1.0, "p95": 1.5, "mean_chars": 45.2},
    },
    "rss_mb": {"e5": 310.0, "cnn": 110.0},
    "size_mb": {"e5": 38.0, "cnn": 11.0},
}


def encoder_cards(out: Path, work: Path) -> None:
    """Both encoder cards from fixed run figures, over model directories of the e5 recipes."""
    from deployments.runtime.model_dir import ModelDir
    from training.model_card import render_encoder_ner, render_encoder_sentiment
    from training.report import EncoderEnsemble, FitHistory, NerComparison, NerExport, SentimentComparison

    sentiment = ModelDir.load(work / "e5-sentiment" / "sentiment-e5").manifest
    ner = ModelDir.load(work / "e5-ner" / "ner-e5").manifest
    (out / "e5_sentiment" / "MODEL_CARD.md").write_text(
        render_encoder_sentiment(
            sentiment,
            FitHistory.model_validate(SENTIMENT_HISTORY),
            EncoderEnsemble.model_validate(ENSEMBLE),
            SentimentComparison.model_validate(SENTIMENT_SCORES),
        ),
        encoding="utf-8",
    )
    (out / "e5_ner" / "MODEL_CARD.md").write_text(
        render_encoder_ner(
            ner,
            FitHistory.model_validate(NER_HISTORY),
            NerExport.model_validate({"export_seconds": 60.0, **NER_EXPORT}),
            NerComparison.model_validate(NER_SCORES),
        ),
        encoding="utf-8",
    )


def write_all(out: Path, work: Path) -> None:
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    cnn_ship(out, work)
    cnn_loop(out)
    encoder_fit(out, work)
    encoder_sentiment_dir(out, work)
    encoder_ner_dir(out, work)
    encoder_cards(out, work)


def main(argv: list[str]) -> int:
    import tempfile

    started = time.time()
    with tempfile.TemporaryDirectory() as work:
        write_all(Path(argv[0]), Path(work))
    print(f"wrote {argv[0]} in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
