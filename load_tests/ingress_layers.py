"""What each layer of the ingress's HTTP path costs per request, measured in process.

    .venv/bin/python -m load_tests.ingress_layers [--requests 3000] [--route /v1/ner]

The ingress (``serve_app.ingress``) over fake model handles that answer from tiny real models at
once (tests/support/fake_ingress.py), driven by direct ASGI calls (no sockets, no Ray), one
request at a time; CPU time per request (``time.process_time``) of:

- ``full app``: the app Serve runs: FastAPI routing + our five pure-ASGI middlewares;
- ``no middleware``: the same FastAPI app with the middlewares removed (what they cost);
- ``minimal ASGI route``: one hand-written ASGI function that reads the body, parses it with the
  same ``serve_app.body`` code, runs the same handler and sends the same JSON (what a pure-ASGI hot
  path past FastAPI could save, an upper bound: no routing table, no error handlers, no metrics);
- ``handler only``: the route's handler (``Ingress._one_result``: analysis and JSON), no HTTP at all (the tiny models'
  own cost is inside every row; the differences between rows are what the layers cost).

Compare the rows with load_tests/cpu_budget.py's Ingress CPU per request under wrk: what is left
after the layers is Serve's own (the replica's ASGI bridge, the handle calls, serialisation).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

TEXT = "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。"
Send = Callable[[dict[str, Any]], Awaitable[None]]


def scope(path: str, body_bytes: int) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"zhserve"),
            (b"content-type", b"application/json"),
            (b"content-length", str(body_bytes).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call_asgi(app: Any, path: str, body: bytes) -> int:
    request_scope = scope(path, len(body))
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(request_scope, receive, send)
    return status


def minimal_route(ingress: Any, task: str) -> Callable[..., Awaitable[None]]:
    """The hot route as one ASGI function: the same body parsing, handler and JSON as the app's."""
    from starlette.requests import Request

    from serve_app.body import parse, read_body
    from serve_app.schemas import TextRequest

    async def app(request_scope: dict[str, Any], receive: Any, send: Send) -> None:
        body = parse(TextRequest, await read_body(Request(request_scope, receive), ingress.config))
        payload = (await ingress._one_result(body.text, task)).body
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


async def measure(name: str, once: Callable[[], Awaitable[Any]], requests: int) -> tuple[str, float]:
    for _ in range(min(200, requests)):  # warm-up
        await once()
    began = time.process_time()
    for _ in range(requests):
        await once()
    return name, (time.process_time() - began) / requests * 1000


async def run(requests: int, route: str, rounds: int) -> list[tuple[str, float]]:
    from serve_app.ingress import build_fastapi_app
    from tests.support.fake_ingress import FakeModels, make_ingress

    task = {"/v1/ner": "ner", "/v1/sentiment": "sentiment"}[route]
    body = json.dumps({"text": TEXT}, ensure_ascii=False).encode()
    with tempfile.TemporaryDirectory() as root:
        models = FakeModels(Path(root))
        ingress = make_ingress(models)
        full = build_fastapi_app(ingress)
        bare = build_fastapi_app(ingress)
        bare.user_middleware.clear()  # built lazily at the first call: this app runs without them
        minimal = minimal_route(ingress, task)

        async def handler_only() -> None:
            await ingress._one_result(TEXT, task)

        variants: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("full app (FastAPI + middlewares)", lambda: call_asgi(full, route, body)),
            ("no middleware (FastAPI routing)", lambda: call_asgi(bare, route, body)),
            ("minimal ASGI route", lambda: call_asgi(minimal, route, body)),
            ("handler only (no HTTP)", handler_only),
        ]
        # Rounds interleave the variants so a slower stretch of the machine hits them all; the
        # fastest round of each is its cost.
        best: dict[str, float] = {}
        for _ in range(rounds):
            for name, once in variants:
                _, ms = await measure(name, once, requests)
                best[name] = min(best.get(name, ms), ms)
        results = [(name, best[name]) for name, _ in variants]
        statuses = {await call_asgi(app, route, body) for app in (full, bare, minimal)}
        if statuses != {200}:
            raise RuntimeError(f"a variant did not answer 200: {statuses}")
        return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--route", default="/v1/ner", choices=["/v1/ner", "/v1/sentiment"])
    options = parser.parse_args(argv)
    results = asyncio.run(run(options.requests, options.route, options.rounds))
    print(f"| {options.route}, in process | CPU ms per request |\n|---|---:|")
    for name, ms in results:
        print(f"| {name} | {ms:.3f} |")


if __name__ == "__main__":
    main()
