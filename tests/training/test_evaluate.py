"""zhserve-eval: windowing, scoring through a predictor, and the service client against a stub server."""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from deployments.runtime.tokenizer import BertChineseTokenizer
from training.evaluate import ServicePredictor, evaluate, format_report, token_windows
from training.vocab import build_vocab

ROWS_NER = [
    {
        "text": "马云在杭州",
        "entities": [{"start": 0, "end": 2, "label": "PER"}, {"start": 3, "end": 5, "label": "LOC"}],
    },
    {"text": "李明", "entities": [{"start": 0, "end": 2, "label": "PER"}]},
]
ROWS_SENTIMENT = [{"text": "好", "label": "positive"}, {"text": "差", "label": "negative"}]


def test_token_windows_cover_the_text_at_token_boundaries() -> None:
    tokens = build_vocab(["马云在杭州 hello world"], wordpiece_size=50)
    tokenizer = BertChineseTokenizer({t: i for i, t in enumerate(tokens)})
    text = "马云在杭州 hello world"
    assert token_windows(tokenizer, text, 50) == [(0, len(text))]
    ranges = token_windows(tokenizer, text, 3)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert "".join(text[s:e] for s, e in ranges) == text


class FakePredictor:
    adjusted = 0

    def ner(self, texts):  # type: ignore[no-untyped-def]
        return [[(0, 2, "PER")] for _ in texts]

    def sentiment(self, texts):  # type: ignore[no-untyped-def]
        return ["positive" for _ in texts]


def test_evaluate_with_a_predictor() -> None:
    report = evaluate(ROWS_NER, "ner", FakePredictor())  # type: ignore[arg-type]
    assert report["scores"]["PER"]["f1"] == 1.0
    assert report["scores"]["LOC"]["recall"] == 0.0
    assert report["scores"]["micro"]["precision"] == 1.0
    assert "micro" in format_report(report)
    report = evaluate(ROWS_SENTIMENT, "sentiment", FakePredictor())  # type: ignore[arg-type]
    assert report["scores"]["accuracy"] == 0.5


def test_service_predictor_posts_to_v1_batch() -> None:
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, **body})
            results = [
                {
                    "ner": {"entities": [{"text": t[:2], "label": "PER", "start": 0, "end": 2, "score": 0.9}]},
                    "sentiment": {"label": "negative", "score": 0.8},
                }
                for t in body["texts"]
            ]
            payload = json.dumps({"results": results}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        predictor = ServicePredictor(f"http://127.0.0.1:{server.server_port}", batch_size=1, timeout=10)
        report = evaluate(ROWS_NER, "ner", predictor)
        assert report["scores"]["PER"]["f1"] == 1.0
        assert seen[0]["path"] == "/v1/batch" and seen[0]["tasks"] == ["ner"] and len(seen) == 2
        assert predictor.sentiment(["好"]) == ["negative"]
    finally:
        server.shutdown()
