"""Overload, measured: a burst of concurrent long documents against a running zhserve, then one
short request. Admission control (serve_app.model_client.ModelClient.admit) refuses at once, with 503
and Retry-After, what the models cannot finish within the time limit; what it accepts completes.

    .venv/bin/python load_tests/burst.py --url http://127.0.0.1:8000 [--clients 96] [--chars 20000]

Prints: how many were accepted, refused and failed; how long a refusal took; the latency of the
accepted requests; the characters per second the service kept analysing during the burst; and
how long the short request after the burst took. tests/serve/test_overload.py runs it against
the test cluster and checks the answers.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import dataclass, field

import httpx

SENTENCES = (
    "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。",
    "这家酒店的服务很好，房间干净整洁，下次还会再来。",
    "国务院新闻办公室今天上午在北京举行新闻发布会。",
)


def document(chars: int) -> str:
    parts: list[str] = []
    while sum(map(len, parts)) < chars:
        parts.append(SENTENCES[len(parts) % len(SENTENCES)])
    return "".join(parts)[:chars]


@dataclass
class BurstReport:
    clients: int
    chars: int
    wall_s: float = 0.0
    accepted_s: list[float] = field(default_factory=list)  # latency of each 200
    refused_s: list[float] = field(default_factory=list)  # latency of each 503 overloaded
    retry_after_s: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # anything else
    after_s: float = 0.0  # the short request sent when the burst ended
    after_status: int = 0

    @property
    def chars_per_second(self) -> float:
        return len(self.accepted_s) * self.chars / self.wall_s if self.wall_s else 0.0

    def lines(self) -> list[str]:
        def spread(values: list[float]) -> str:
            if not values:
                return "-"
            ordered = sorted(values)
            p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
            return f"p50 {statistics.median(ordered):.2f} s, p99 {p99:.2f} s, max {ordered[-1]:.2f} s"

        return [
            f"burst: {self.clients} concurrent /v1/analyze of {self.chars:,} characters",
            f"  accepted {len(self.accepted_s)}, refused 503 {len(self.refused_s)}, other {len(self.failures)}",
            f"  time to a 503: {spread(self.refused_s)}; Retry-After {sorted(set(self.retry_after_s))} s",
            f"  accepted latency: {spread(self.accepted_s)}",
            f"  kept: {self.chars_per_second:,.0f} characters/s over the burst's {self.wall_s:.1f} s",
            f"  short request right after: {self.after_status} in {self.after_s * 1000:.0f} ms",
        ]


def run_burst(url: str, clients: int = 96, chars: int = 20_000, timeout_s: float = 180) -> BurstReport:
    report = BurstReport(clients, chars)
    text = document(chars)
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client() -> None:
        with httpx.Client(timeout=timeout_s) as http:
            start.wait()
            sent = time.monotonic()
            try:
                response = http.post(f"{url}/v1/analyze", json={"text": text})
            except httpx.HTTPError as exc:
                with lock:
                    report.failures.append(repr(exc))
                return
            elapsed = time.monotonic() - sent
            with lock:
                if response.status_code == 200:
                    report.accepted_s.append(elapsed)
                elif response.status_code == 503 and response.json()["error"]["code"] == "overloaded":
                    report.refused_s.append(elapsed)
                    report.retry_after_s.append(int(response.headers["retry-after"]))
                else:
                    report.failures.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join(timeout=timeout_s + 10)
    report.wall_s = time.monotonic() - began
    hung = sum(thread.is_alive() for thread in threads)
    if hung:
        report.failures.extend(["hung"] * hung)
    sent = time.monotonic()
    response = httpx.post(f"{url}/v1/analyze", json={"text": SENTENCES[0]}, timeout=timeout_s)
    report.after_s, report.after_status = time.monotonic() - sent, response.status_code
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, default=96)
    parser.add_argument("--chars", type=int, default=20_000)
    arguments = parser.parse_args()
    print("\n".join(run_burst(arguments.url, arguments.clients, arguments.chars).lines()))


if __name__ == "__main__":
    main()
