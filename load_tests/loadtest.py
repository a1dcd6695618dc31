"""`make loadtest`: a bounded, headless Locust run (load_tests/locustfile.py) against zhserve
started as `make run` starts it (or against --url), then a report per route: requests per
second, p50/p95/p99 latency and error rate, as Markdown and CSV.

    .venv/bin/python load_tests/loadtest.py [--users 16] [--spawn-rate 4] [--duration 60] [--url URL]

Writes artifacts/loadtest/<UTC time>/: REPORT.md, locust_stats.csv (Locust's own, per route),
locust_failures.csv, locust_stats_history.csv and the service's log.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from load_tests.bench import REPO_ROOT, machine, start_zhserve, stop_zhserve

LOCUST = Path(sys.executable).with_name("locust")


def report(stats_csv: Path, title: str) -> str:
    rows = list(csv.DictReader(stats_csv.open(encoding="utf-8")))
    lines = [
        f"# {title}",
        "",
        "| route | requests | failures | error rate | req/s | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        requests, failures = int(row["Request Count"]), int(row["Failure Count"])
        rate = failures / requests if requests else 0.0
        name = "**all**" if row["Name"] == "Aggregated" else f"`{row['Type']} {row['Name']}`"
        lines.append(
            f"| {name} | {requests:,} | {failures:,} | {rate:.2%} | {float(row['Requests/s']):.1f} | "
            f"{row['50%']} | {row['95%']} | {row['99%']} | {float(row['Max Response Time']):.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--spawn-rate", type=float, default=4)
    parser.add_argument("--duration", type=int, default=60, help="seconds of load")
    parser.add_argument("--url", help="an already running zhserve (default: start one as `make run` does)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "artifacts" / "loadtest")
    arguments = parser.parse_args()
    started = dt.datetime.now(dt.UTC)
    out = arguments.out / started.strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    service = None
    url = arguments.url
    if url is None:
        print("starting zhserve as `make run` does ...", flush=True)
        service = start_zhserve("zhserve", Path(tempfile.mkdtemp(prefix="zhserve-loadtest-")))
        url = service.url
        print(f"ready in {service.ready_s:.1f} s at {url}", flush=True)
    try:
        command = [
            str(LOCUST), "-f", str(REPO_ROOT / "load_tests" / "locustfile.py"), "--headless",
            "--host", url, "--users", str(arguments.users), "--spawn-rate", str(arguments.spawn_rate),
            "--run-time", f"{arguments.duration}s", "--stop-timeout", "30",
            "--csv", str(out / "locust"), "--csv-full-history", "--only-summary",
        ]  # fmt: skip
        print(" ".join(command), flush=True)
        completed = subprocess.run(command, cwd=REPO_ROOT, timeout=arguments.duration + 120)
    finally:
        if service is not None:
            stop_zhserve(service)
            (out / "service.log").write_bytes(service.log.read_bytes())
    title = (
        f"Locust: {arguments.users} users, {arguments.duration} s, {started:%Y-%m-%d %H:%M} UTC, "
        f"{'zhserve as `make run` starts it' if service else url}; {machine()}"
    )
    text = report(out / "locust_stats.csv", title)
    (out / "REPORT.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"written to {out}")
    # Locust exits 1 when any request failed; admission control's 503s count as failures there.
    sys.exit(0 if completed.returncode in (0, 1) else completed.returncode)


if __name__ == "__main__":
    main()
