"""What one request costs, and where: CPU milliseconds per request for every process of the stack.

    .venv/bin/python load_tests/cpu_budget.py [--routes ner,analyze] [--clients 16] [--seconds 20]
        [--flamegraphs DIR] [--override DEPLOYMENT.FIELD=VALUE ...] [--out FILE.md]

zhserve is started as ``make run`` starts it (``serve_app.launch run serve_config.yaml``), warmed
at the load level, then held under a fixed ``wrk`` load on each route. Every process's CPU time
(user + system, all threads, from ``/proc/PID/stat``) is read before and after the measured
window; the difference divided by the requests answered is that process's share of a request.
Processes are grouped by role: HAProxy, each Ingress replica, each model replica, and Ray's own
(raylet, GCS, dashboard and its agents, the Serve controller and proxy actor, idle workers).
Beside it, the model core in process on the same texts (``load_tests/bench.py``'s limit): what a
text costs when nothing but the model runs.

With ``--flamegraphs DIR`` it also records py-spy flame graphs (SVG) of the Ingress replica and of
a model replica under the same load. A script, never a test: it prints figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load_tests.bench import (
    BIN,
    REPO_ROOT,
    Report,
    command_line,
    core_limit,
    scripts,
    start_zhserve,
    stop_zhserve,
    warm_up,
    wrk,
)

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
ROUTES = {"ner": "/v1/ner", "sentiment": "/v1/sentiment", "analyze": "/v1/analyze"}

# (pattern on the command line, role); the first match wins. Replica names come from Serve:
# ray::ServeReplica:<app>:<deployment>.
ROLES: list[tuple[str, str]] = [
    (r"haproxy", "HAProxy"),
    (r"ServeReplica:[^:\s]+:Ingress", "Ingress replica"),
    (r"ServeReplica:[^:\s]+:NER", "NER replica"),
    (r"ServeReplica:[^:\s]+:Sentiment", "Sentiment replica"),
    (r"ServeController", "Serve controller"),
    (r"ProxyActor", "Serve proxy actor"),
    (r"(^|/)raylet\b", "raylet"),
    (r"gcs_server", "GCS"),
    (r"dashboard/agent\.py", "dashboard agent"),
    (r"dashboard/dashboard\.py", "dashboard"),
    (r"runtime_env/agent", "runtime-env agent"),
    (r"log_monitor", "log monitor"),
    (r"autoscaler|monitor\.py", "autoscaler monitor"),
    (r"serve run|serve_app\.launch", "serve run (driver)"),
    (r"^ray::IDLE|default_worker\.py", "idle Ray workers"),
    (r"(^|/)wrk\b", "wrk (the load)"),
]


def role_of(command: str) -> str | None:
    for pattern, role in ROLES:
        if re.search(pattern, command):
            return role
    return None


def cpu_ticks() -> dict[int, tuple[int, str]]:
    """utime + stime of every process (all its threads), with its command line."""
    found: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            found[int(entry.name)] = (int(fields[11]) + int(fields[12]), command_line(int(entry.name)))
    return found


def thread_ticks(pid: int) -> dict[str, int]:
    """utime + stime of each thread of ``pid``, by thread name (threads of one name summed)."""
    found: dict[str, int] = defaultdict(int)
    for entry in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            text = (entry / "stat").read_text()
            name = text[text.index("(") + 1 : text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
            found[re.sub(r"\d+$", "N", name)] += int(fields[11]) + int(fields[12])
    return found


def machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class Budget:
    route: str
    clients: int
    requests: int
    seconds: float
    rps: float
    p99_ms: float
    per_role_ms: dict[str, float]  # CPU ms per request, by role (replicas numbered)
    stack_ms: float  # all roles of the stack (wrk and unrelated processes excluded)
    other_ms: float  # processes outside the stack (the machine's other work), per request
    machine_busy: float  # share of the machine's CPU in use during the window


def measure(url: str, route: str, script: Path, clients: int, seconds: float) -> Budget:
    before = cpu_ticks()
    replicas = {pid: role for pid, (_, command) in before.items() if (role := role_of(command)) and "replica" in role}
    threads_before = {pid: thread_ticks(pid) for pid in replicas}
    busy_before = machine_busy_ticks()
    began = time.perf_counter()
    point = wrk(url + ROUTES[route], script, clients, seconds, f"zhserve {ROUTES[route]}")
    elapsed = time.perf_counter() - began
    after = cpu_ticks()
    busy_after = machine_busy_ticks()
    requests = max(point.requests, 1)
    for pid, role in replicas.items():
        with contextlib.suppress(OSError):
            now = thread_ticks(pid)
            used = {name: (ticks - threads_before[pid].get(name, 0)) * 1000 / TICKS_PER_S / requests
                    for name, ticks in now.items()}  # fmt: skip
            top = ", ".join(f"{name} {ms:.2f}" for name, ms in sorted(used.items(), key=lambda x: -x[1])[:8] if ms > 0)
            print(f"  threads of {role} (pid {pid}), CPU ms per request: {top}")
    per_role: dict[str, float] = defaultdict(float)
    numbering: dict[str, list[int]] = defaultdict(list)
    other = 0.0
    for pid, (ticks, command) in after.items():
        used = ticks - before.get(pid, (0, ""))[0]
        if used <= 0:
            continue
        ms = used * 1000 / TICKS_PER_S / requests
        role = role_of(command)
        if role is None:
            other += ms
            continue
        if role.endswith("replica"):
            numbering[role].append(pid)
            role = f"{role} {len(numbering[role])}"
        per_role[role] += ms
    busy = (busy_after[0] - busy_before[0]) / max(busy_after[1] - busy_before[1], 1)
    stack = sum(ms for role, ms in per_role.items() if not role.startswith("wrk"))
    return Budget(route, clients, point.requests, elapsed, point.rps, point.p99_ms, dict(per_role), stack, other, busy)


def flamegraph(pid: int, out: Path, seconds: float, form: str = "flamegraph") -> subprocess.Popen[bytes]:
    """py-spy record of one replica (sampling, the process keeps running): an SVG flame graph, or
    collapsed stacks (``raw``) to add up."""
    command = [str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration", str(int(seconds)),
               "--rate", "200", "--nonblocking", "--output", str(out), "--format", form]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def replica_pids(role: str) -> list[int]:
    return sorted(pid for pid, (_, command) in cpu_ticks().items() if role_of(command) == role)


def report_tables(report: Report, budgets: Sequence[Budget], limits: dict[str, float], label: str) -> None:
    roles = sorted({role for budget in budgets for role in budget.per_role_ms},
                   key=lambda r: -max(b.per_role_ms.get(r, 0.0) for b in budgets))  # fmt: skip
    header = ["process", *(f"{ROUTES[b.route]} ({b.clients} clients)" for b in budgets)]
    rows: list[list[object]] = []
    for role in roles:
        rows.append([role, *(f"{b.per_role_ms.get(role, 0.0):.2f}" for b in budgets)])
    rows.append(["**the stack, all processes**", *(f"**{b.stack_ms:.2f}**" for b in budgets)])
    rows.append(["model core alone (in process, batches of 16)",
                 *(f"{limits.get(b.route, 0.0):.2f}" for b in budgets)])  # fmt: skip
    rows.append(["requests/s (p99 ms)", *(f"{b.rps:.0f} ({b.p99_ms:.0f})" for b in budgets)])
    rows.append(["machine busy during the window", *(f"{b.machine_busy:.0%}" for b in budgets)])
    rows.append(["processes outside the stack", *(f"{b.other_ms:.2f}" for b in budgets)])
    report.table(
        f"CPU per request, by process ({label})",
        header,
        rows,
        "CPU milliseconds (user + system, all threads, from /proc deltas) per answered request under a fixed wrk "
        "load, after a warm-up. The model-core row is 2 cores / the in-process limit: what the models themselves "
        "cost per text.",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", default="ner,analyze")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--flamegraphs", type=Path, help="directory for py-spy SVG flame graphs")
    parser.add_argument("--flamegraph-format", default="flamegraph", choices=["flamegraph", "raw", "speedscope"])
    parser.add_argument("--override", action="append", default=[], help="serve config override (bench.py syntax)")
    parser.add_argument("--arg", action="append", default=[], help="builder arg KEY=VALUE (e.g. ner_model=DIR)")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the stack's environment")
    parser.add_argument("--label", default="make run's configuration")
    parser.add_argument("--no-limit", action="store_true", help="skip the in-process model-core measurement")
    parser.add_argument("--out", type=Path, help="append the tables to this markdown file")
    options = parser.parse_args(argv)
    routes = options.routes.split(",")
    given = dict(item.split("=", 1) for item in options.arg)  # builder args
    report = Report()
    work = Path(tempfile.mkdtemp(prefix="zhserve-cpu-"))
    lua = scripts(work)
    limits: dict[str, float] = {}
    if not options.no_limit:
        ner_dir = Path(given.get("ner_model", REPO_ROOT / "models" / "ner"))
        sentiment_dir = Path(given.get("sentiment_model", REPO_ROOT / "models" / "sentiment-e5"))
        for route in routes:
            kind = {"ner": "ner", "sentiment": "sentiment", "analyze": "both"}[route]
            rate = core_limit(kind, 2, 10, ner_dir, sentiment_dir)
            limits[route] = 2000 / rate
            print(f"model core in process, {kind}: {rate:,.0f} texts/s = {limits[route]:.2f} CPU ms per text")
    env = dict(item.split("=", 1) for item in options.env)
    args = given or None
    service = start_zhserve("zhserve", work, overrides=options.override, env=env, args=args, golden=args is None)
    budgets = []
    try:
        for route in routes:
            warm_up(service.url + ROUTES[route], lua["text"])
            if options.flamegraphs:
                options.flamegraphs.mkdir(parents=True, exist_ok=True)
                targets = {"ingress": "Ingress replica", "ner": "NER replica", "sentiment": "Sentiment replica"}
                recorders = []
                for name, role in targets.items():
                    if route == "ner" and name == "sentiment":
                        continue
                    for index, pid in enumerate(replica_pids(role)):
                        suffix = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}[options.flamegraph_format]
                        out = options.flamegraphs / f"{route}-{name}-{index + 1}.{suffix}"
                        recorders.append(flamegraph(pid, out, options.seconds, options.flamegraph_format))
                wrk(service.url + ROUTES[route], lua["text"], options.clients, options.seconds, "(profiled)")
                for recorder in recorders:
                    recorder.wait(timeout=120)
            budgets.append(measure(service.url, route, lua["text"], options.clients, options.seconds))
    finally:
        stop_zhserve(service)
    report_tables(report, budgets, limits, options.label)
    if options.out:
        with open(options.out, "a", encoding="utf-8") as handle:
            handle.write("\n".join(report.lines) + "\n")


if __name__ == "__main__":
    main()
