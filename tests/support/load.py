"""Client threads that keep sending requests over loopback HTTP while a test breaks something,
and account for every request: its answer, or the exception that ended it. A thread that hangs
or raises is a test failure of its own (``Load.join`` says which)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Answer:
    sent: float  # time.monotonic() when the request was sent
    elapsed_s: float
    status: int  # 0: no HTTP answer (the exception is in ``error``)
    body: Any
    payload: dict[str, Any]
    error: str = ""


@dataclass
class Load:
    """``len(payloads)`` threads, thread i posting ``payloads[i]`` to ``url + path`` until stopped."""

    url: str
    path: str
    payloads: Sequence[dict[str, Any]]
    timeout_s: float = 130.0
    headers: dict[str, str] = field(default_factory=dict)
    on_answer: Callable[[Answer], float] | None = None  # returns seconds to wait before the next request
    answers: list[Answer] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        for payload in self.payloads:
            thread = threading.Thread(target=self._client, args=(payload,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _client(self, payload: dict[str, Any]) -> None:
        try:
            with httpx.Client(timeout=self.timeout_s, headers=self.headers) as http:
                while not self._stop.is_set():
                    sent = time.monotonic()
                    try:
                        response = http.post(f"{self.url}{self.path}", json=payload)
                        try:
                            body: Any = response.json()
                        except ValueError:  # not JSON (a proxy's own error page): kept as text
                            body = {"non_json": response.text[:300]}
                        answer = Answer(sent, time.monotonic() - sent, response.status_code, body, payload)
                    except httpx.HTTPError as exc:  # no answer: recorded as a failed request
                        answer = Answer(sent, time.monotonic() - sent, 0, None, payload, error=repr(exc))
                    with self._lock:
                        self.answers.append(answer)
                    if self.on_answer is not None:
                        self._stop.wait(self.on_answer(answer))
        except BaseException as exc:  # anything else is a bug in the test or the service's answer
            self.crashes.append(f"{type(exc).__name__}: {exc}")

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop sending and wait for the requests in flight (each ends within its timeout)."""
        self._stop.set()
        deadline = time.monotonic() + (self.timeout_s + 10 if timeout_s is None else timeout_s)
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def check_clients(self) -> None:
        """Fail unless every client thread ended and none raised."""
        hung = sum(thread.is_alive() for thread in self._threads)
        assert not hung, f"{hung} client thread(s) hung past their request timeout"
        assert not self.crashes, f"client thread(s) raised: {self.crashes[:3]}"

    def failures(self) -> list[Answer]:
        return [answer for answer in self.answers if answer.status != 200]

    def during(self, start: float, end: float) -> list[Answer]:
        return [answer for answer in self.answers if start <= answer.sent <= end]


def wait_answering(url: str, path: str, payload: dict[str, Any], timeout_s: float) -> bool:
    """Post ``payload`` every half second until it is answered 200; whether it was in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"{url}{path}", json=payload, timeout=10).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False
