"""A step-by-step progress display for long exports (each step's name, then its duration)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol, TextIO


class Progress(Protocol):
    durations: dict[str, float]

    def step(self, title: str) -> AbstractContextManager[None]: ...

    def note(self, message: str) -> None: ...


class StepPrinter:
    """Prints ``[3/8] export ONNX … done in 12.3 s`` lines to ``stream`` (stderr by default)."""

    def __init__(self, total: int, *, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.index = 0
        self.durations: dict[str, float] = {}

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.index += 1
        prefix = f"[{self.index}/{self.total}] {title}"
        print(f"{prefix} …", file=self.stream, flush=True)
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            print(f"{prefix} failed after {time.perf_counter() - started:.1f} s", file=self.stream, flush=True)
            raise
        elapsed = time.perf_counter() - started
        self.durations[title] = elapsed
        print(f"{prefix} done in {elapsed:.1f} s", file=self.stream, flush=True)

    def note(self, message: str) -> None:
        print(f"      {message}", file=self.stream, flush=True)


class Silent:
    """No output; records durations like :class:`StepPrinter`."""

    def __init__(self) -> None:
        self.durations: dict[str, float] = {}

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.durations[title] = time.perf_counter() - started

    def note(self, message: str) -> None:
        pass
