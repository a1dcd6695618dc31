"""The design zhserve replaced, rebuilt for side-by-side measurement: Flask with one global lock
and one inference per request, as the two ModelScope services ran.

    python load_tests/seed_design.py --port 8100 [--ner-model DIR] [--sentiment-model DIR] [--torch]
    gunicorn -w 2 -b 127.0.0.1:8100 'load_tests.seed_design:create_app()'   # the NER service's advice

Routes: ``POST /ner`` and ``POST /predict`` (sentiment) as the two services had, and ``POST
/analyze`` (both, one after the other, as a client calling both services would get). Each request
runs the model on its own text, under the lock, exactly as the services did; the model core is
zhserve's own (``NerModel`` / ``SentimentModel``), so only the serving differs.

``--ner-source``/``--sentiment-source`` run the models as the services really ran them: the FP32
PyTorch BERTs of ModelScope-layout directories (a shape twin's source, ``zhserve-models twin``),
loaded with ``transformers``, instead of the ONNX INT8 models.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def _onnx_models(ner_dir: str, sentiment_dir: str) -> tuple[Any, Any]:
    from deployments.runtime.ner import NerModel
    from deployments.runtime.sentiment import SentimentModel

    ner = NerModel.from_model_dir(ner_dir, intra_op_threads=1)
    sentiment = SentimentModel.from_model_dir(sentiment_dir, intra_op_threads=1)

    def run_ner(text: str) -> list[dict[str, Any]]:
        return [entity.to_dict() for entity in ner.predict([text])[0]]

    def run_sentiment(text: str) -> dict[str, Any]:
        return sentiment.predict([text])[0].to_dict()

    return run_ner, run_sentiment


def _torch_models(ner_dir: str, sentiment_dir: str, ner_source: str, sentiment_source: str) -> tuple[Any, Any]:
    """FP32 PyTorch models from ModelScope-layout directories (a shape twin's source), as the
    services ran them; tokenizer, labels and CRF come from the exported zhserve directories."""
    import numpy as np
    import torch

    from deployments.runtime.crf import CrfParams, decode_batch
    from deployments.runtime.model_dir import ModelDir
    from deployments.runtime.spans import build_entities
    from deployments.runtime.tokenizer import Tokenizer
    from training.export.layouts import read_source
    from training.export.modules import load_source_module

    torch.set_num_threads(1)
    ner_model_dir = ModelDir.load(ner_dir, verify_checksums=False)
    sentiment_model_dir = ModelDir.load(sentiment_dir, verify_checksums=False)
    ner_tokenizer = Tokenizer.from_model_dir(ner_model_dir)
    sentiment_tokenizer = Tokenizer.from_model_dir(sentiment_model_dir)
    ner_net, _ = load_source_module(read_source(ner_source, "ner"))
    sentiment_layout = read_source(sentiment_source, "sentiment")
    sentiment_net, _ = load_source_module(sentiment_layout)
    manifest = ner_model_dir.manifest
    crf = CrfParams.load(ner_model_dir.file(manifest.crf)) if manifest.crf else None

    def feeds(tokenizer: Tokenizer, ids: Any, max_length: int) -> list[torch.Tensor]:
        batch = tokenizer.pad([ids], max_length=max_length)
        return [torch.from_numpy(a) for a in (batch.input_ids, batch.attention_mask, batch.token_type_ids)]

    @torch.inference_mode()
    def run_ner(text: str) -> list[dict[str, Any]]:
        (tokens,) = ner_tokenizer.encode([text])
        emissions = ner_net(*feeds(ner_tokenizer, tokens.ids, manifest.max_seq_length)).numpy()
        length = len(tokens)
        if crf is not None:
            paths, confidences = decode_batch(emissions[:, 1 : 1 + length], [length], crf)
            path, confidence = paths[0], confidences[0]
        else:
            path, confidence = emissions[0, 1 : 1 + length].argmax(-1), np.ones(length)
        tags = [manifest.labels[t] for t in path.tolist()]
        scheme = manifest.tag_scheme or "BIO"
        entities = build_entities(text, tags, tokens.offsets.tolist(), confidence.tolist(), scheme)
        return [entity.to_dict() for entity in entities]

    @torch.inference_mode()
    def run_sentiment(text: str) -> dict[str, Any]:
        (tokens,) = sentiment_tokenizer.encode([text])
        max_length = sentiment_model_dir.manifest.max_seq_length
        logits = sentiment_net(*feeds(sentiment_tokenizer, tokens.ids, max_length)).numpy()[0]
        exp = np.exp(logits - logits.max())
        scores = dict(zip(sentiment_layout.labels, (exp / exp.sum()).tolist(), strict=True))
        label = max(scores, key=scores.__getitem__)
        return {"label": label, "score": scores[label], "scores": scores}

    return run_ner, run_sentiment


def create_app(
    ner_dir: str | None = None,
    sentiment_dir: str | None = None,
    ner_source: str | None = None,
    sentiment_source: str | None = None,
) -> Any:
    """The Flask app (also the gunicorn entry point; settings then come from SEED_* variables).
    With ``ner_source``/``sentiment_source`` (ModelScope-layout directories) it runs PyTorch FP32."""
    from flask import Flask, jsonify, request

    ner_dir = ner_dir or os.environ.get("SEED_NER_MODEL", str(REPO_ROOT / "models" / "ner"))
    sentiment_dir = sentiment_dir or os.environ.get("SEED_SENTIMENT_MODEL", str(REPO_ROOT / "models" / "sentiment-e5"))
    ner_source = ner_source or os.environ.get("SEED_NER_SOURCE")
    sentiment_source = sentiment_source or os.environ.get("SEED_SENTIMENT_SOURCE")
    if ner_source and sentiment_source:
        run_ner, run_sentiment = _torch_models(ner_dir, sentiment_dir, ner_source, sentiment_source)
    else:
        run_ner, run_sentiment = _onnx_models(ner_dir, sentiment_dir)
    lock = threading.Lock()  # one inference at a time per process, as the services had
    app = Flask("seed")

    @app.post("/ner")
    def ner() -> Any:
        text = request.get_json(force=True)["text"]
        with lock:
            entities = run_ner(text)
        return jsonify({"entities": entities})

    @app.post("/predict")
    def predict() -> Any:
        text = request.get_json(force=True)["text"]
        with lock:
            result = run_sentiment(text)
        return jsonify(result)

    @app.post("/analyze")
    def analyze() -> Any:
        text = request.get_json(force=True)["text"]
        with lock:
            entities = run_ner(text)
            sentiment = run_sentiment(text)
        return jsonify({"ner": {"entities": entities}, "sentiment": sentiment})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--ner-model", default=None)
    parser.add_argument("--sentiment-model", default=None)
    parser.add_argument("--ner-source", default=None, help="ModelScope-layout NER directory: run it in PyTorch FP32")
    parser.add_argument("--sentiment-source", default=None, help="ModelScope-layout sentiment directory (PyTorch)")
    options = parser.parse_args()
    app = create_app(options.ner_model, options.sentiment_model, options.ner_source, options.sentiment_source)
    app.run(host="127.0.0.1", port=options.port, threaded=True)


if __name__ == "__main__":
    main()
