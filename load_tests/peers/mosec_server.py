"""Mosec (0.9.x) serving zhserve's model core, configured as Mosec's documentation recommends for
batched inference; a peer in `make bench` (``load_tests/bench.py --sections peers``).

    python load_tests/peers/mosec_server.py --port 8101 [--ner-model DIR] [--sentiment-model DIR]
        [--workers 2] [--max-batch-size 16] [--max-wait-ms 10]

Routes and JSON shapes are the seed design's (``POST /ner``, ``/predict``, ``/analyze`` with
``{"text": ...}``), so the same wrk scripts measure it; the answers are the model core's
(``load_tests/peers/core.py``).

The pipeline (Mosec's multi-route API, ``Server.register_runtime``):

- ``/ner``: tokenise (NER tokenizer) → NER inference
- ``/predict``: tokenise (sentiment tokenizer) → sentiment inference
- ``/analyze``: tokenise (both) → NER inference → sentiment inference

The two inference stages are shared by the routes that need them (as in Mosec's multi-route
example, where one ``Runtime`` appears in two routes), so each model is loaded ``--workers`` times,
not once per route. Settings, and the documentation behind each:

- **A preprocessing stage and an inference stage.** README, *Performance tuning*: "Try to split the
  whole inference process into separate CPU and GPU stages (ref DistilBERT)"; its DistilBERT example
  tokenises in a ``Preprocess`` worker and batches token ids in an ``Inference`` worker. Here both
  stages are CPU, but tokenising apart keeps the inference workers on model work, and it is the
  layout the documentation shows for a BERT.
- **Dynamic batching on the inference stages: ``max_batch_size=16``, ``max_wait_time=10`` ms.**
  README, *Configuration*: "If enabled, it will collect a batch either when the number of
  accumulated requests reaches ``max_batch_size`` or when ``max_wait_time`` has elapsed. The service
  will benefit from this feature when the traffic is high", and "Normally, ``max_wait_time`` should
  be less than the batch inference time". 16 is the most clients the benchmark sends, so one batch
  can take every request in flight; 10 ms is Mosec's own default wait (``--wait``, 10 ms) and is
  below a 16-text batch of either model here (NER about 14 ms, e5 sentiment about 90 ms; the
  BERT-base twins far more). No preprocessing batch: tokenising one short text takes microseconds.
- **Workers per stage: ``--workers`` (default: the number of cores, 2 here) for every stage.**
  README: "You can also adjust the number of workers in each stage ... increasing the number of
  CPU-stage workers can help to produce more data to be batched for model inference". Each worker
  is a process; on CPU an inference worker that runs ONNX Runtime on one intra-op thread uses one
  core, so one inference worker per core and model. The DistilBERT example gives preprocessing twice
  the inference workers; with 2 cores and a tokeniser some hundred times cheaper than the model,
  preprocessing is never the bottleneck, so it gets as many as inference.
- **Threads.** README: "Configure the threads for OpenBLAS or MKL. It might not be able to choose
  the most suitable CPUs used by the current Python process". Every session here is built with one
  intra-op thread (``core.ner_model``), as zhserve's replicas and the seed design are.
- **Warm-up.** The examples set ``self.example`` "for warmup"; the inference workers do, with a full
  batch, so no first request pays for it.
- **Service timeout 60 s** (``--timeout``, default 3 s) to match wrk's ``--timeout 60s``, so a slow
  production-size point is measured rather than turned into errors; **127.0.0.1** only; log level
  ``warning``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from mosec import Runtime, Server, ValidationError, Worker  # noqa: E402

from load_tests.peers import core  # noqa: E402

SAMPLE = "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。"


class Tokenize(Worker):
    """Ingress: the JSON body → the text and its tokens for the models this route runs
    (``PEER_TASKS``, set per route through ``Runtime(env=...)``)."""

    def __init__(self) -> None:
        super().__init__()
        tasks = os.environ["PEER_TASKS"].split(",")
        self.ner = core.tokenizer(os.environ["PEER_NER_MODEL"]) if "ner" in tasks else None
        self.sentiment = core.tokenizer(os.environ["PEER_SENTIMENT_MODEL"]) if "sentiment" in tasks else None

    def forward(self, data: Any) -> dict[str, Any]:
        try:
            text = core.text_of(data)
        except ValueError as error:
            raise ValidationError(str(error)) from error
        state: dict[str, Any] = {"text": text}
        if self.ner is not None:
            state["ner_tokens"] = self.ner.encode([text])[0]
        if self.sentiment is not None:
            state["sentiment_tokens"] = self.sentiment.encode([text])[0]
        return state


class _Inference(Worker):
    def serialize(self, data: Any) -> bytes:
        # Compact UTF-8 JSON (the default indents and escapes every Chinese character).
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


class Ner(_Inference):
    """A batch of tokenised texts → their entities. Egress of ``/ner``; on ``/analyze`` the state
    goes on to the sentiment stage."""

    def __init__(self) -> None:
        super().__init__()
        self.model = core.ner_model(os.environ["PEER_NER_MODEL"])
        tokens = self.model.tokenizer.encode([SAMPLE])[0]
        self.example = [{"text": SAMPLE, "ner_tokens": tokens} for _ in range(int(os.environ["PEER_MAX_BATCH"]))]

    def forward(self, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
        found = core.entities(self.model, [s["text"] for s in data], [s["ner_tokens"] for s in data])
        for state, entities in zip(data, found, strict=True):
            state.pop("ner_tokens", None)
            state["entities"] = entities
        return data

    def serialize(self, data: Any) -> bytes:
        return super().serialize({"entities": data["entities"]})


class Sentiment(_Inference):
    """A batch of tokenised texts → their sentiment. Egress of ``/predict`` and ``/analyze``."""

    def __init__(self) -> None:
        super().__init__()
        self.model = core.sentiment_model(os.environ["PEER_SENTIMENT_MODEL"])
        tokens = self.model.tokenizer.encode([SAMPLE])[0]
        self.example = [{"text": SAMPLE, "sentiment_tokens": tokens} for _ in range(int(os.environ["PEER_MAX_BATCH"]))]

    def forward(self, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results = core.sentiments(self.model, [s["sentiment_tokens"] for s in data])
        for state, sentiment in zip(data, results, strict=True):
            state.pop("sentiment_tokens", None)
            state["sentiment"] = sentiment
        return data

    def serialize(self, data: Any) -> bytes:
        if "entities" in data:
            return super().serialize(core.analyze_answer(data["entities"], data["sentiment"]))
        return super().serialize(data["sentiment"])


def build(workers: int, max_batch_size: int, max_wait_ms: int) -> Server:
    server = Server()
    batched = {"num": workers, "max_batch_size": max_batch_size, "max_wait_time": max_wait_ms}
    ner, sentiment = Runtime(Ner, **batched), Runtime(Sentiment, **batched)

    def tokenize(route: str) -> Runtime:
        return Runtime(Tokenize, num=workers, env=[{"PEER_TASKS": ",".join(core.TASKS[route])}] * workers)

    server.register_runtime(
        {
            "/ner": [tokenize("/ner"), ner],
            "/predict": [tokenize("/predict"), sentiment],
            "/analyze": [tokenize("/analyze"), ner, sentiment],
        }
    )
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--ner-model", default=core.DEFAULT_NER)
    parser.add_argument("--sentiment-model", default=core.DEFAULT_SENTIMENT)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes per stage")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=int, default=10)
    options, _ = parser.parse_known_args()  # Mosec reads its own flags (--port among them) from argv too
    # Mosec's own settings, through its MOSEC_* environment variables (CLI flags override them).
    os.environ.setdefault("MOSEC_ADDRESS", "127.0.0.1")
    os.environ.setdefault("MOSEC_TIMEOUT", "60000")
    os.environ.setdefault("MOSEC_LOG_LEVEL", "warning")
    os.environ["MOSEC_PORT"] = str(options.port)
    # The workers are spawned processes: they read the model directories from the environment.
    os.environ["PEER_NER_MODEL"] = str(Path(options.ner_model).resolve())
    os.environ["PEER_SENTIMENT_MODEL"] = str(Path(options.sentiment_model).resolve())
    os.environ["PEER_MAX_BATCH"] = str(options.max_batch_size)
    build(options.workers, options.max_batch_size, options.max_wait_ms).run()


if __name__ == "__main__":
    main()
