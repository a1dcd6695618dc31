"""Score NER or sentiment on a JSONL file in the shared format, through the model core or a service.

    zhserve-eval data.jsonl --model-dir models/ner               # Python model core (no Ray)
    zhserve-eval data.jsonl --url http://127.0.0.1:8000          # a running zhserve service
    zhserve-eval data.jsonl --model-dir models/sentiment --json   # machine-readable output

The task follows from the file (rows with ``entities`` are NER, rows with ``label`` sentiment) unless
``--task`` says otherwise. NER is scored by exact entity match (start, end, label); sentiment by
accuracy and per-label F1.

The model core takes at most ``max_seq_length`` tokens per text. In ``--model-dir`` mode longer
NER texts are cut into consecutive windows at token boundaries (entities are shifted back to the
document's offsets; an entity crossing a window edge can be missed) and longer sentiment texts are
truncated to their head; the count is reported. In ``--url`` mode texts are sent whole: the service
does its own chunking.

User errors (a missing or malformed data file, with its line number; a bad model directory; a service
that cannot be reached or refuses the request) print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from deployments.runtime.model_dir import ModelDirError
from deployments.runtime.ner import NerModel
from deployments.runtime.sentiment import SentimentModel
from training.data import read_jsonl
from training.errors import UserError, run_cli
from training.metrics import Span, entity_scores, sentiment_scores


def detect_task(rows: Sequence[dict]) -> str:
    if not rows:
        raise UserError("the data file has no rows")
    if "entities" in rows[0]:
        return "ner"
    if "label" in rows[0]:
        return "sentiment"
    raise UserError("rows have neither 'entities' (NER) nor 'label' (sentiment); pass --task")


def token_windows(tokenizer, text: str, max_tokens: int) -> list[tuple[int, int]]:
    """Character ranges of consecutive windows of at most ``max_tokens`` tokens covering ``text``."""
    ((_, offsets),) = tokenizer.tokenize([text])
    if len(offsets) <= max_tokens:
        return [(0, len(text))]
    ranges = []
    for first in range(0, len(offsets), max_tokens):
        last = min(first + max_tokens, len(offsets)) - 1
        start = 0 if first == 0 else offsets[first][0]
        end = len(text) if last == len(offsets) - 1 else offsets[last + 1][0]
        ranges.append((start, end))
    return ranges


class CorePredictor:
    """Predictions through ``deployments.runtime`` (the code the service runs, without Ray).

    ``model`` is a loaded ``NerModel`` or ``SentimentModel``; :meth:`from_model_dir` loads one.
    """

    def __init__(self, model: NerModel | SentimentModel, *, batch_size: int) -> None:
        self.model = model
        self.tokenizer = model.tokenizer
        self.max_tokens = model.max_seq_length - 2
        self.batch_size = batch_size
        self.adjusted = 0  # texts windowed (NER) or truncated (sentiment)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, task: str, *, threads: int, batch_size: int) -> CorePredictor:
        model_class = NerModel if task == "ner" else SentimentModel
        try:
            model = model_class.from_model_dir(model_dir, intra_op_threads=threads)
        except ModelDirError as exc:
            raise UserError(f"--model-dir: {exc}") from exc
        return cls(model, batch_size=batch_size)

    def _batches(self, items: list[str]):
        lengths = self.tokenizer.count_tokens(items)
        order = sorted(range(len(items)), key=lengths.__getitem__)
        for begin in range(0, len(order), self.batch_size):
            yield order[begin : begin + self.batch_size]

    def ner(self, texts: Sequence[str]) -> list[list[Span]]:
        pieces: list[tuple[int, int, str]] = []  # (document index, char offset, window text)
        for doc, text in enumerate(texts):
            ranges = token_windows(self.tokenizer, text, self.max_tokens)
            self.adjusted += len(ranges) > 1
            pieces += [(doc, start, text[start:end]) for start, end in ranges]
        results: list[list[Span]] = [[] for _ in texts]
        window_texts = [p[2] for p in pieces]
        for indices in self._batches(window_texts):
            assert isinstance(self.model, NerModel)
            for index, entities in zip(indices, self.model.predict([window_texts[i] for i in indices]), strict=True):
                doc, shift, _ = pieces[index]
                results[doc] += [(e.start + shift, e.end + shift, e.label) for e in entities]
        return results

    def sentiment(self, texts: Sequence[str]) -> list[str]:
        clipped = []
        for text, (_, offsets) in zip(texts, self.tokenizer.tokenize(list(texts)), strict=True):
            if len(offsets) > self.max_tokens:
                self.adjusted += 1
                text = text[: offsets[self.max_tokens - 1][1]]
            clipped.append(text)
        labels = [""] * len(texts)
        for indices in self._batches(clipped):
            assert isinstance(self.model, SentimentModel)
            for index, result in zip(indices, self.model.predict([clipped[i] for i in indices]), strict=True):
                labels[index] = result.label
        return labels


class ServicePredictor:
    """Predictions from a running service: ``POST {url}/v1/batch``."""

    def __init__(self, url: str, *, batch_size: int, timeout: float) -> None:
        if not url.startswith(("http://", "https://")):
            raise UserError(f"--url {url}: expected http://HOST:PORT or https://...")
        self.endpoint = url.rstrip("/") + "/v1/batch"
        self.batch_size = batch_size
        self.timeout = timeout
        self.adjusted = 0

    def _post(self, texts: Sequence[str], task: str) -> list[dict]:
        body = json.dumps({"texts": list(texts), "tasks": [task]}, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(
            self.endpoint, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace").strip()
            raise UserError(f"{self.endpoint} answered {exc.code} {exc.reason}: {detail}") from exc
        except urllib.error.URLError as exc:
            raise UserError(f"cannot reach {self.endpoint}: {exc.reason}") from exc
        except TimeoutError as exc:
            raise UserError(f"{self.endpoint} did not answer within --timeout {self.timeout:g} s") from exc
        results = payload["results"]
        if len(results) != len(texts):
            raise RuntimeError(f"sent {len(texts)} texts but the service answered {len(results)} results")
        return results

    def _all(self, texts: Sequence[str], task: str) -> list[dict]:
        results: list[dict] = []
        for begin in range(0, len(texts), self.batch_size):
            results += self._post(texts[begin : begin + self.batch_size], task)
        return results

    def ner(self, texts: Sequence[str]) -> list[list[Span]]:
        return [
            [(e["start"], e["end"], e["label"]) for e in result["ner"]["entities"]]
            for result in self._all(texts, "ner")
        ]

    def sentiment(self, texts: Sequence[str]) -> list[str]:
        return [result["sentiment"]["label"] for result in self._all(texts, "sentiment")]


def evaluate(rows: Sequence[dict], task: str, predictor: CorePredictor | ServicePredictor) -> dict:
    """Scores of ``predictor`` on ``rows`` plus timing and how many texts were windowed/truncated."""
    texts = [row["text"] for row in rows]
    started = time.perf_counter()
    if task == "ner":
        predicted = predictor.ner(texts)
        gold = [[(e["start"], e["end"], e["label"]) for e in row.get("entities", [])] for row in rows]
        scores: dict = {label: prf.to_dict() for label, prf in entity_scores(gold, predicted).items()}
    else:
        scores = sentiment_scores([row["label"] for row in rows], predictor.sentiment(texts))
    return {
        "task": task,
        "rows": len(rows),
        "seconds": round(time.perf_counter() - started, 2),
        "windowed_or_truncated": predictor.adjusted,
        "scores": scores,
    }


def format_report(report: dict) -> str:
    lines = [f"{report['task']}: {report['rows']} rows in {report['seconds']} s"]
    if report["windowed_or_truncated"]:
        lines.append(f"  {report['windowed_or_truncated']} texts longer than the model takes were windowed/truncated")
    scores = report["scores"]
    if report["task"] == "ner":
        lines.append(f"  {'label':<8}{'P':>8}{'R':>8}{'F1':>8}{'gold':>8}")
        for label, s in scores.items():
            lines.append(f"  {label:<8}{s['precision']:>8.4f}{s['recall']:>8.4f}{s['f1']:>8.4f}{s['support']:>8}")
    else:
        lines.append(f"  accuracy {scores['accuracy']:.4f}  macro F1 {scores['macro_f1']:.4f}")
        for label, s in scores["labels"].items():
            lines.append(
                f"  {label:<9} P {s['precision']:.4f} R {s['recall']:.4f} F1 {s['f1']:.4f} (gold {s['support']})"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="zhserve-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, help="JSONL: {text, entities} (NER) or {text, label} (sentiment)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model-dir", help="model directory, scored through deployments.runtime")
    target.add_argument("--url", help="base URL of a running service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--task", choices=["ner", "sentiment"], help="default: from the data file")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (--model-dir)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request (--url)")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N rows")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    return run_cli("zhserve-eval", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    rows = read_jsonl(args.data)
    if args.limit:
        rows = rows[: args.limit]
    task = args.task or detect_task(rows)
    predictor: CorePredictor | ServicePredictor
    if args.model_dir:
        predictor = CorePredictor.from_model_dir(args.model_dir, task, threads=args.threads, batch_size=args.batch_size)
    else:
        predictor = ServicePredictor(args.url, batch_size=args.batch_size, timeout=args.timeout)
    report = evaluate(rows, task, predictor)
    print(json.dumps(report, ensure_ascii=False, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
