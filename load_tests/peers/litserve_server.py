"""LitServe (0.2.x) serving zhserve's model core, configured as LitServe's documentation recommends
for batched CPU inference; a peer in `make bench` (``load_tests/bench.py --sections peers``).

    python load_tests/peers/litserve_server.py --port 8102 [--ner-model DIR] [--sentiment-model DIR]
        [--workers 2] [--max-batch-size 16] [--batch-timeout 0.01]

Routes and JSON shapes are the seed design's (``POST /ner``, ``/predict``, ``/analyze`` with
``{"text": ...}``), so the same wrk scripts measure it; the answers are the model core's
(``load_tests/peers/core.py``). One ``LitAPI`` per route (LitServe's multi-endpoint serving,
``LitServer([api, ...])`` with ``api_path``), each with LitServe's batching hooks:
``decode_request`` takes the text out of the body, ``batch`` tokenises the texts of a batch (as
LitServe's own BERT benchmark server, ``tests/perf_test/bert/server.py``, tokenises in ``batch``),
``predict`` runs the model once on the batch, ``unbatch`` splits it per request and
``encode_response`` gives the route's JSON.

Settings, and the documentation behind each:

- **``accelerator="cpu"``.** ``LitServer`` docstring: '"cpu": Force CPU usage' (the default,
  "auto", would pick a GPU if one were there).
- **``workers_per_device=--workers`` (default: the number of cores, 2 here).** ``LitServer``
  docstring: "Worker processes per device for parallel inference ... For CPU, set to the number of
  cores available on the machine (e.g., 8 for 8-core CPU)". Every route gets that many inference
  worker processes, each running ONNX Runtime on one intra-op thread (one core).
- **``max_batch_size=16``, ``batch_timeout=0.01`` s on every ``LitAPI``.** Batching docs: "LitServe
  enables request batching, combining multiple incoming requests into a single batch ... It improves
  system throughput and resource utilization with minimal latency impact"; ``LitAPI`` docstring:
  "``max_batch_size``: Batch multiple requests ..." and "``batch_timeout``: Wait time for batch to
  fill (seconds)"; ``LitServer``'s docstring says to pass both to the ``LitAPI`` (the ``LitServer``
  arguments are deprecated). 0.01 s is the timeout of LitServe's own BERT benchmark server (batch
  10, ``workers_per_device=2``); 16 is the most clients the benchmark sends, so one batch can take
  every request in flight. A lone request waits the whole ``batch_timeout`` for company (LitServe
  collects until the batch is full or the timeout has passed), which one-client latency shows.
- **``fast_queue=True``.** ``LitServer`` docstring: "Enable ZeroMQ for high-throughput scenarios
  (>100 RPS) ... Use when serving hundreds of requests per second"; the embedded models are served
  at hundreds per second.
- **``num_api_servers`` left at its default.** ``run`` docstring: "None: Uses same count as
  inference workers (recommended)", i.e. one uvicorn process per inference worker.
- **``timeout=60``** (default 30 s) to match wrk's ``--timeout 60s``; ``host="127.0.0.1"``;
  ``log_level="warning"`` (docstring: "good for production"); ``generate_client_file=False`` (it
  would write ``client.py`` into the working directory).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import litserve as ls  # noqa: E402
from fastapi import HTTPException  # noqa: E402

from load_tests.peers import core  # noqa: E402


class _TextAPI(ls.LitAPI):
    """Shared: the text out of the body; a batch's outputs are already one per request.

    ``decode_request``'s ``request`` and ``encode_response``'s return carry no annotation on
    purpose: LitServe builds the FastAPI endpoint from them, and an unannotated request is the
    parsed JSON body (an annotation would become a query parameter or a response model)."""

    def __init__(self, ner_dir: str, sentiment_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ner_dir, self.sentiment_dir = ner_dir, sentiment_dir

    def decode_request(self, request, **kwargs: Any) -> str:
        try:
            return core.text_of(request)
        except ValueError as error:
            raise HTTPException(status_code=422, detail=str(error)) from error

    def unbatch(self, output: Any) -> list[Any]:
        return list(output)


class NerAPI(_TextAPI):
    def setup(self, device: str) -> None:
        self.ner = core.ner_model(self.ner_dir)

    def batch(self, inputs: list[str]) -> tuple[list[str], list[Any]]:
        return inputs, self.ner.tokenizer.encode(inputs)

    def predict(self, x: tuple[list[str], list[Any]], **kwargs: Any) -> list[list[dict[str, Any]]]:
        texts, tokens = x
        return core.entities(self.ner, texts, tokens)

    def encode_response(self, output: list[dict[str, Any]], **kwargs: Any):
        return {"entities": output}


class SentimentAPI(_TextAPI):
    def setup(self, device: str) -> None:
        self.sentiment = core.sentiment_model(self.sentiment_dir)

    def batch(self, inputs: list[str]) -> list[Any]:
        return self.sentiment.tokenizer.encode(inputs)

    def predict(self, x: list[Any], **kwargs: Any) -> list[dict[str, Any]]:
        return core.sentiments(self.sentiment, x)

    def encode_response(self, output: dict[str, Any], **kwargs: Any):
        return output


class AnalyzeAPI(_TextAPI):
    def setup(self, device: str) -> None:
        self.ner = core.ner_model(self.ner_dir)
        self.sentiment = core.sentiment_model(self.sentiment_dir)

    def batch(self, inputs: list[str]) -> tuple[list[str], list[Any], list[Any]]:
        return inputs, self.ner.tokenizer.encode(inputs), self.sentiment.tokenizer.encode(inputs)

    def predict(self, x: tuple[list[str], list[Any], list[Any]], **kwargs: Any) -> list[dict[str, Any]]:
        texts, ner_tokens, sentiment_tokens = x
        found = core.entities(self.ner, texts, ner_tokens)
        results = core.sentiments(self.sentiment, sentiment_tokens)
        return [core.analyze_answer(e, s) for e, s in zip(found, results, strict=True)]

    def encode_response(self, output: dict[str, Any], **kwargs: Any):
        return output


def build(ner_dir: str, sentiment_dir: str, workers: int, max_batch_size: int, batch_timeout: float) -> ls.LitServer:
    batching = {"max_batch_size": max_batch_size, "batch_timeout": batch_timeout}
    apis = [
        NerAPI(ner_dir, sentiment_dir, api_path="/ner", **batching),
        SentimentAPI(ner_dir, sentiment_dir, api_path="/predict", **batching),
        AnalyzeAPI(ner_dir, sentiment_dir, api_path="/analyze", **batching),
    ]
    return ls.LitServer(apis, accelerator="cpu", workers_per_device=workers, fast_queue=True, timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8102)
    parser.add_argument("--ner-model", default=core.DEFAULT_NER)
    parser.add_argument("--sentiment-model", default=core.DEFAULT_SENTIMENT)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="inference workers per route")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-timeout", type=float, default=0.01, help="seconds")
    parser.add_argument("--api-servers", type=int, default=None, help="uvicorn processes (default: LitServe's)")
    options = parser.parse_args()
    ner_dir, sentiment_dir = str(Path(options.ner_model).resolve()), str(Path(options.sentiment_model).resolve())
    server = build(ner_dir, sentiment_dir, options.workers, options.max_batch_size, options.batch_timeout)
    server.run(host="127.0.0.1", port=options.port, num_api_servers=options.api_servers, log_level="warning",
               generate_client_file=False)  # fmt: skip


if __name__ == "__main__":
    main()
