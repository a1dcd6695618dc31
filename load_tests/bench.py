"""`make bench`: zhserve against the design it replaced and against its own limit, in one run.

    .venv/bin/python load_tests/bench.py [--seconds 15] [--clients 1,4,16] [--sections ...] [--out BENCHMARKS.md]
        [--peers flask,gunicorn,mosec,litserve] [--peer-sizes embedded,base] [--warm-up 20]

Sections (all by default, in this order; figures in one run are measured side by side):

- ``limit``: the model core in process, N processes × 1 intra-op thread, batches of 16 — the
  most the machine can compute, per model and both.
- ``seed``: the Flask design zhserve replaced on the same model directories (Flask
  ``threaded=True`` + one global lock + one inference per request), and its gunicorn 2-worker
  variant; routes ``/ner``, ``/predict``, ``/analyze``.
- ``zhserve``: started exactly as ``make run`` starts it (``serve_app.launch run serve_config.yaml``);
  ``/v1/ner``, ``/v1/sentiment``, ``/v1/analyze``, ``/v1/batch`` (64 texts, NER) at each client count.
- ``levers``: each setting that cuts per-request cost, switched off (or varied) one at a time
  against the default: access log, HAProxy, the throughput-optimised mode, proxy location, log
  level, the replicas' CPU layout and how many calls the ingress keeps in flight.
- ``base``: production size, BERT-base INT8 shape twins (``zhserve-models twin --size base`` →
  export), served by zhserve and by the seed design, and the seed as it really ran: the twins'
  FP32 PyTorch weights behind Flask + lock. With ``peers``, zhserve is measured on every route
  here, for the headline.
- ``peers``: the serving frameworks a user would pick instead, on the same model core and model
  directories, embedded and BERT-base (the ``base`` section's twins) sizes, every route
  (``/ner``, ``/predict``, ``/analyze``) at each client count: the seed design (Flask + lock,
  gunicorn -w 2; the ``seed`` section's points when it ran), Mosec and LitServe, each configured as
  its documentation recommends for batched CPU inference (``load_tests/peers/``, which says which
  settings and why). Its headline table is zhserve / the best peer per route, next to the peers'
  own tables; ``--peers`` and ``--peer-sizes`` pick a subset.
- ``memory``: idle PSS of the whole local stack, RSS per replica, cold start to a first correct
  answer, and the time ``Ctrl+C`` takes to leave nothing behind.

The load generator is ``wrk`` (Debian package; compiled, one thread, keep-alive), so the client
does not steal the CPU it measures; its own CPU time is reported. Loopback only. This is a
script, never a test: it fails on nothing but a broken service.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
PYTHON = sys.executable
BIN = Path(PYTHON).parent

# Four short news sentences and four reviews: the mix every route is measured with.
SENTENCES = [
    "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。",
    "国务院总理李克强在北京人民大会堂会见了法国总统马克龙。",
    "新华社上海电，复旦大学今天举行了第十届国际学术研讨会。",
    "中国足球队在广州天河体育场以二比一战胜了日本队。",
    "这家酒店的服务很贴心，房间干净，下次还会再来。",
    "手机电池不耐用，屏幕还有划痕，非常失望。",
    "快递很快，包装完好，书的质量也不错。",
    "房间太小了，隔音很差，晚上根本睡不着。",
]
BATCH_TEXTS = 64
GOLDEN = ("马云", "PER", 8, 10)


# ------------------------------------------------------------------------------------------
# Load generation


@dataclass
class Point:
    label: str
    clients: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    wrk_cpu_s: float
    items_per_request: int = 1

    @property
    def items_per_s(self) -> float:
        return self.rps * self.items_per_request


def _lua(path: Path, bodies: Sequence[str]) -> None:
    quoted = ",\n".join("  " + json.dumps(body, ensure_ascii=False) for body in bodies)
    path.write_text(
        "local bodies = {\n" + quoted + "\n}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n"
        '  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[(i % #bodies) + 1])\n'
        "end\n",
        encoding="utf-8",
    )


def scripts(work: Path) -> dict[str, Path]:
    """wrk scripts: one text per request (``text``) and a 64-text NER batch (``batch``)."""
    paths = {"text": work / "text.lua", "batch": work / "batch.lua"}
    _lua(paths["text"], [json.dumps({"text": s}, ensure_ascii=False) for s in SENTENCES])
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(BATCH_TEXTS)]
    _lua(paths["batch"], [json.dumps({"texts": texts, "tasks": ["ner"]}, ensure_ascii=False)])
    return paths


def _duration_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


WARM_UP_S = 20.0


def warm_up(url: str, script: Path) -> None:
    """16 clients for WARM_UP_S before a service's first point: the autoscaler (upscale_delay_s 5)
    has added the replicas sustained load asks for, so every point measures the steady state."""
    subprocess.run(["wrk", "-t1", "-c16", f"-d{WARM_UP_S:g}s", "-s", str(script), url], capture_output=True,
                   check=True)  # fmt: skip


def wrk(url: str, script: Path, clients: int, seconds: float, label: str, items: int = 1) -> Point:
    """One load level: ``clients`` keep-alive connections for ``seconds``, one wrk thread."""
    command = ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--latency", "--timeout", "60s", "-s", str(script), url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    out = process.stdout.read() if process.stdout else ""
    if status != 0:
        raise RuntimeError(f"wrk failed: {out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _duration_ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _duration_ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    point = Point(label, clients, rps, p50, p99, errors, requests, usage.ru_utime + usage.ru_stime, items)
    print(
        f"  {label:<44} {clients:>3} clients: {point.items_per_s:8.1f}/s  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms"
        f"  errors {errors}  (wrk CPU {point.wrk_cpu_s:.1f} s)",
        flush=True,
    )
    return point


# ------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """No socket listens on ``port`` (connections left in TIME_WAIT do not count)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return False
    return True


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    return ""


def memory_kib(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def leftovers() -> list[str]:
    """Processes a stopped stack must not leave: Ray's and HAProxy."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            line = command_line(int(entry.name))
            if re.search(r"(^|/)(raylet|gcs_server|haproxy)\b|^ray::", line):
                found.append(f"{entry.name} {line[:80]}")
    return found


@dataclass
class Service:
    """A server started as a subprocess in its own process group; ``stop`` sends SIGINT (Ctrl+C)."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    started: float
    port: int
    ready_s: float = 0.0

    def stop(self, timeout_s: float = 90) -> float:
        began = time.perf_counter()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            print(f"  ! {self.name} did not stop within {timeout_s:g} s after SIGINT; killing it", flush=True)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        return time.perf_counter() - began


def start(name: str, command: list[str], *, env: dict[str, str], ready: Any, port: int, work: Path) -> Service:
    log = work / f"{name}.log"
    began = time.perf_counter()
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
                                   start_new_session=True, preexec_fn=_default_sigint)  # fmt: skip
    service = Service(name, process, f"http://127.0.0.1:{port}", log, began, port)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited: see {log}\n{log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if ready(service):
                service.ready_s = time.perf_counter() - began
                return service
        time.sleep(0.25)
    service.stop()
    raise TimeoutError(f"{name} not ready after 600 s; see {log}")


def _ready(url: str) -> bool:
    return httpx.get(f"{url}/readyz", timeout=30).status_code == 200


def _golden(url: str) -> bool:
    response = httpx.post(f"{url}/v1/analyze", json={"text": SENTENCES[0]}, timeout=30)
    if response.status_code != 200:
        return False
    entities = response.json()["ner"]["entities"]
    return any((e["text"], e["label"], e["start"], e["end"]) == GOLDEN for e in entities)


def _default_sigint() -> None:
    # A shell without job control starts background jobs with SIGINT ignored, and the ignore is
    # inherited: stopping a service "as Ctrl+C does" needs SIGINT back to its default in the child.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def serve_config(path: Path, port: int, *, args: dict[str, Any] | None = None, overrides: Sequence[str] = ()) -> Path:
    """serve_config.yaml on another port, with ``args`` and ``overrides`` (``logging.KEY=V``,
    ``proxy_location=V``, ``DEPLOYMENT.user_config.KEY=V``, ``DEPLOYMENT.FIELD=V``)."""
    config = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text(encoding="utf-8"))
    config["http_options"]["port"] = port
    (application,) = config["applications"]
    application["args"] = {key: str(REPO_ROOT / value) if key.endswith("_model") else value
                           for key, value in application["args"].items()}  # fmt: skip
    application["args"].update(args or {})
    deployments = {d["name"]: d for d in application["deployments"]}
    for override in overrides:
        key, raw = override.split("=", 1)
        value = yaml.safe_load(raw)
        parts = key.split(".")
        if parts[0] == "args":
            application["args"][parts[1]] = value
        elif parts[0] == "logging":
            config["logging_config"][parts[1]] = value
        elif parts[0] == "proxy_location":
            config["proxy_location"] = value
        else:
            target: dict[str, Any] = deployments[parts[0]]
            for part in parts[1:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def start_zhserve(name: str, work: Path, *, overrides: Sequence[str] = (), env: dict[str, str] | None = None,
                  args: dict[str, Any] | None = None, golden: bool = True) -> Service:  # fmt: skip
    """zhserve as `make run` starts it: the launcher on a serve config. Ready when it gives the
    golden answer (``golden``; random-weight twins cannot) or else when /readyz says so."""
    for line in leftovers():
        raise RuntimeError(f"a Ray or HAProxy process is already running ({line}); stop it first")
    port = free_port()
    config = serve_config(work / f"{name}.yaml", port, args=args, overrides=overrides)
    environment = {**os.environ, **(env or {})}
    environment.pop("RAY_ADDRESS", None)
    return start(name, [PYTHON, "-m", "serve_app.launch", "run", str(config)], env=environment,
                 ready=lambda s: _golden(s.url) if golden else _ready(s.url), port=port, work=work)  # fmt: skip


def stop_zhserve(service: Service) -> tuple[float, list[str]]:
    seconds = service.stop()
    deadline = time.monotonic() + 30
    left = leftovers()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = leftovers()
    if not port_is_free(service.port):
        left.append(f"port {service.port} still taken")
    if left:
        print(f"  ! left behind after stopping {service.name}: {left}", flush=True)
    return seconds, left


def start_seed(name: str, work: Path, *, gunicorn: bool = False, extra: dict[str, str] | None = None) -> Service:
    port = free_port()
    env = {**os.environ, **(extra or {})}
    if gunicorn:
        command = [str(BIN / "gunicorn"), "-w", "2", "--threads", "8", "-b", f"127.0.0.1:{port}",
                   "--log-level", "warning", "load_tests.seed_design:create_app()"]  # fmt: skip
    else:
        command = [PYTHON, "load_tests/seed_design.py", "--port", str(port)]
        if extra and "SEED_NER_SOURCE" in extra:
            command += ["--ner-source", extra["SEED_NER_SOURCE"], "--sentiment-source", extra["SEED_SENTIMENT_SOURCE"]]

    def ready(service: Service) -> bool:
        response = httpx.post(f"{service.url}/ner", json={"text": SENTENCES[0]}, timeout=30)
        return response.status_code == 200

    return start(name, command, env=env, ready=ready, port=port, work=work)


# ------------------------------------------------------------------------------------------
# The limit: the model core in process


def _core_worker(kind: str, ner_dir: str, sentiment_dir: str, seconds: float, queue: Any) -> None:
    from deployments.runtime.ner import NerModel
    from deployments.runtime.sentiment import SentimentModel

    models = []
    if kind in ("ner", "both"):
        models.append(NerModel.from_model_dir(ner_dir, intra_op_threads=1))
    if kind in ("sentiment", "both"):
        models.append(SentimentModel.from_model_dir(sentiment_dir, intra_op_threads=1))
    batch = [SENTENCES[i % len(SENTENCES)] for i in range(16)]
    for model in models:
        model.predict(batch)
    texts, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        for model in models:
            model.predict(batch)
        texts += len(batch)
    queue.put(texts / (time.perf_counter() - began))


def core_limit(kind: str, processes: int, seconds: float, ner_dir: Path, sentiment_dir: Path) -> float:
    """Texts per second of ``processes`` processes running the model core on batches of 16."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_core_worker, args=(kind, str(ner_dir), str(sentiment_dir), seconds, queue))
               for _ in range(processes)]  # fmt: skip
    for worker in workers:
        worker.start()
    rates = [queue.get(timeout=seconds + 300) for _ in workers]
    for worker in workers:
        worker.join()
    return sum(rates)


# ------------------------------------------------------------------------------------------
# The run


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)

    def table(self, title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], note: str = "") -> None:
        print(f"\n{title}\n" + (f"{note}\n" if note else ""), flush=True)
        self.lines += [f"### {title}", ""] + ([note, ""] if note else [])
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "---|" * len(header))
        for row in rows:
            self.lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
        self.lines.append("")
        widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=False)]
        for row in [header, *rows]:
            print("  " + "  ".join(str(cell).rjust(width) for cell, width in zip(row, widths, strict=True)))


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b > 0 else "–"


def idle_share(seconds: float = 2.0) -> float:
    def read() -> list[int]:
        return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]

    before = read()
    time.sleep(seconds)
    after = read()
    deltas = [b - a for a, b in zip(before, after, strict=True)]
    return (deltas[3] + deltas[4]) / max(1, sum(deltas))


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB RAM, {platform.system()} {platform.release()}"


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if git("status", "--porcelain") else "")


def main() -> None:
    global WARM_UP_S
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15, help="duration of each load level")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--sections", default="limit,seed,zhserve,levers,base,peers,memory")
    parser.add_argument("--levers", default=None, help="only the levers whose names contain one of these (a,b,...)")
    parser.add_argument("--peers", default=",".join(PEERS), help="the peers the peers section measures")
    parser.add_argument("--peer-sizes", default=",".join(SIZES), help="model sizes the peers section serves")
    parser.add_argument("--warm-up", type=float, default=WARM_UP_S, help="seconds at 16 clients before the points")
    parser.add_argument("--out", default=str(REPO_ROOT / "BENCHMARKS.md"))
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument(
        "--sentiment-model",
        default="models/sentiment-e5",
        help="the sentiment tier every section serves (models/sentiment is the fast CNN tier)",
    )
    parser.add_argument(
        "--ner-model",
        default="models/ner-ensemble",
        help="the NER tier every section serves (models/ner is the CNN tier, models/ner-e5 the e5 tier)",
    )
    options = parser.parse_args()
    WARM_UP_S = options.warm_up
    if shutil.which("wrk") is None:
        raise SystemExit("error: wrk is not installed (Debian: apt-get install wrk; `make bench` installs it)")
    sections = options.sections.split(",")
    clients = [int(c) for c in options.clients.split(",")]
    seconds = options.seconds
    work = Path(options.work or tempfile.mkdtemp(prefix="zhserve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    lua = scripts(work)
    ner_dir, sentiment_dir = (REPO_ROOT / options.ner_model).resolve(), (REPO_ROOT / options.sentiment_model).resolve()
    tier = {"ner_model": str(ner_dir), "sentiment_model": str(sentiment_dir)}
    report = Report()
    idle = idle_share()
    started = dt.datetime.now(dt.UTC)
    print(
        f"zhserve benchmark on {machine()}, commit {commit()}; CPU idle before the run: {idle:.0%}; "
        f"tiers {ner_dir.name} + {sentiment_dir.name}",
        flush=True,
    )
    if idle < 0.9:
        print("  ! the machine is busy: other load shares the cores and lowers every figure", flush=True)
    processes = os.cpu_count() or 1
    limits: dict[str, float] = {}
    seed: dict[tuple[str, str, int], Point] = {}
    ours: dict[tuple[str, int], Point] = {}

    if "limit" in sections:
        print(f"\n[limit] model core in process, {processes} processes × 1 thread, batches of 16", flush=True)
        for kind in ("ner", "sentiment", "both"):
            limits[kind] = core_limit(kind, processes, seconds, ner_dir, sentiment_dir)
            print(f"  {kind}: {limits[kind]:.0f} texts/s", flush=True)
        report.table(
            "The limit: the model core in process",
            ["model", "texts/s"],
            [[kind, f"{rate:,.0f}"] for kind, rate in limits.items()],
            note=f"{processes} processes × 1 intra-op thread, batches of 16, no serving; `both` runs each text "
            "through NER and sentiment.",
        )

    seed_routes = {"ner": "/ner", "sentiment": "/predict", "analyze": "/analyze"}
    if "seed" in sections:
        for variant, gunicorn in (("flask", False), ("gunicorn", True)):
            print(f"\n[seed] {variant}", flush=True)
            service = start_seed(
                f"seed-{variant}",
                work,
                gunicorn=gunicorn,
                extra={"SEED_NER_MODEL": tier["ner_model"], "SEED_SENTIMENT_MODEL": tier["sentiment_model"]},
            )
            try:
                warm_up(service.url + "/analyze", lua["text"])
                for route, path in seed_routes.items():
                    for count in clients:
                        seed[(variant, route, count)] = wrk(service.url + path, lua["text"], count, seconds,
                                                            f"seed {variant} {path}")  # fmt: skip
            finally:
                service.stop()

    our_routes = {"ner": "/v1/ner", "sentiment": "/v1/sentiment", "analyze": "/v1/analyze"}
    memory_rows: list[list[Any]] = []
    if "zhserve" in sections or "memory" in sections:
        print("\n[zhserve] as `make run` starts it", flush=True)
        service = start_zhserve("zhserve", work, args=tier)
        try:
            if "memory" in sections:
                time.sleep(10)  # let start-up settle before reading idle memory
                memory_rows = stack_memory(service)
            if "zhserve" in sections:
                warm_up(service.url + "/v1/analyze", lua["text"])
                for route, path in our_routes.items():
                    for count in clients:
                        ours[(route, count)] = wrk(service.url + path, lua["text"], count, seconds, f"zhserve {path}")
                for count in clients:
                    ours[("batch", count)] = wrk(service.url + "/v1/batch", lua["batch"], count, seconds,
                                                 "zhserve /v1/batch (64 texts, NER)", BATCH_TEXTS)  # fmt: skip
        finally:
            stop_s, left = stop_zhserve(service)
        memory_rows.append(["cold start: launch to the first correct /v1/analyze", f"{service.ready_s:.1f} s"])
        memory_rows.append(["Ctrl+C (SIGINT) to every process gone", f"{stop_s:.1f} s"])
        memory_rows.append(["left behind after stopping (Ray processes, HAProxy, port)", ", ".join(left) or "nothing"])

    if ours or seed:
        rows = []
        for route in our_routes:
            for count in clients:
                point = ours.get((route, count))
                flask, gun = seed.get(("flask", route, count)), seed.get(("gunicorn", route, count))
                limit = limits.get("both" if route == "analyze" else route)
                rows.append([
                    our_routes[route], count,
                    f"{flask.rps:.0f} / {flask.p50_ms:.1f} / {flask.p99_ms:.1f}" if flask else "–",
                    f"{gun.rps:.0f} / {gun.p99_ms:.1f}" if gun else "–",
                    f"{point.rps:.0f} / {point.p50_ms:.1f} / {point.p99_ms:.1f}" if point else "–",
                    ratio(point.rps, flask.rps) if point and flask else "–",
                    ratio(point.rps, gun.rps) if point and gun else "–",
                    f"{point.rps / limit:.0%}" if point and limit else "–",
                    (point.errors if point else "–"),
                ])  # fmt: skip
        for count in clients:
            point = ours.get(("batch", count))
            flask = seed.get(("flask", "ner", count))
            rows.append([
                "/v1/batch (64 texts, NER)", count, f"{flask.rps:.0f} texts/s via /ner" if flask else "–", "–",
                f"{point.items_per_s:.0f} texts/s / {point.p50_ms:.1f} / {point.p99_ms:.1f}" if point else "–",
                ratio(point.items_per_s, flask.rps) if point and flask else "–", "–",
                f"{point.items_per_s / limits['ner']:.0%}" if point and "ner" in limits else "–",
                point.errors if point else "–",
            ])  # fmt: skip
        wrk_cpu = max((p.wrk_cpu_s / seconds for p in [*ours.values(), *seed.values()]), default=0.0)
        report.table(
            "zhserve against the seed design, same models",
            ["route", "clients", "seed Flask req/s / p50 / p99 ms", "seed gunicorn ×2 req/s / p99",
             "zhserve req/s / p50 / p99 ms", "zhserve / Flask", "zhserve / gunicorn", "zhserve / limit", "errors"],
            rows,
            note=f"wrk, one thread, keep-alive, {seconds:g} s per point; the mix of {len(SENTENCES)} short news and "
            f"review sentences; every service first warmed for {WARM_UP_S:g} s at 16 clients (the autoscaler settles). "
            f"wrk used at most {wrk_cpu:.0%} of one core.",
        )  # fmt: skip

    if "levers" in sections:
        levers(report, work, lua, seconds, tier, only=options.levers)
    ours_by_size = {("embedded", route, count): point for (route, count), point in ours.items()}
    if "base" in sections:
        every_route = "peers" in sections and "base" in options.peer_sizes.split(",")
        for (route, count), point in base_size(report, work, lua, seconds, clients, every_route=every_route).items():
            ours_by_size[("base", route, count)] = point
    if "peers" in sections:
        peers(report, work, lua, seconds, clients, sizes=options.peer_sizes.split(","), kinds=options.peers.split(","),
              tier=tier, seed=seed, ours=ours_by_size)  # fmt: skip
    if memory_rows:
        report.table("Memory, start and stop (embedded models, `make run`'s configuration)", ["what", "measured"],
                     memory_rows)  # fmt: skip

    write_markdown(Path(options.out), report, started, idle, f"`models/{ner_dir.name}` + `models/{sentiment_dir.name}`")
    print(f"\nwrote {options.out}", flush=True)


def stack_memory(service: Service) -> list[list[Any]]:
    """Idle PSS of every process the launcher started, and RSS of each replica."""
    pids = [service.process.pid, *descendants(service.process.pid)]
    # HAProxy's manager starts HAProxy; Ray's workers are the raylet's children: all below the launcher.
    total_pss = sum(memory_kib(pid, "Pss") for pid in pids)
    rows: list[list[Any]] = [["whole local stack, idle (PSS, all processes)", f"{total_pss / 1024:,.0f} MiB"]]
    for pid in pids:
        line = command_line(pid)
        match = re.search(r"ServeReplica:zhserve:(\w+)", line)
        if match:
            rows.append([f"replica {match.group(1)} (RSS)", f"{memory_kib(pid, 'Rss') / 1024:,.0f} MiB"])
    return rows


LEVERS: list[tuple[str, list[str], dict[str, str]]] = [
    ("default (make run)", [], {}),
    ("access log on", ["logging.enable_access_log=true"], {}),
    ("log level DEBUG", ["logging.log_level=DEBUG"], {}),
    ("log level WARNING", ["logging.log_level=WARNING"], {}),
    ("HAProxy off (Python proxy)", [], {"RAY_SERVE_ENABLE_HA_PROXY": "0"}),
    ("throughput mode and HAProxy off (Ray's defaults)", [],
     {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}),
    ("proxy_location EveryNode", ["proxy_location=EveryNode"], {}),
    ("2 calls in flight per model replica (the model busy across the round trip)",
     ["Ingress.user_config.model_calls_per_replica=2"], {}),
    ("calls of up to 64 windows", ["Ingress.user_config.window_group_size=64"], {}),
    ("2 calls in flight per model replica and calls of up to 64 windows",
     ["Ingress.user_config.model_calls_per_replica=2", "Ingress.user_config.window_group_size=64"], {}),
    ("4 calls in flight per model replica", ["Ingress.user_config.model_calls_per_replica=4"], {}),
    ("model batches computed in a thread", ["NER.user_config.compute_in_thread=true",
                                            "Sentiment.user_config.compute_in_thread=true"], {}),
    ("model calls serialised with cloudpickle (Serve's default)", ["args.handle_serialization=cloudpickle"], {}),
    ("ingress fixed at 1 replica", ["Ingress.autoscaling_config.max_replicas=1"], {}),
    ("model batches wait 5 ms to fill", ["NER.user_config.batch_wait_timeout_s=0.005",
                                         "Sentiment.user_config.batch_wait_timeout_s=0.005"], {}),
    ("models: 1 replica × 2 threads each", ["args.intra_op_threads=2"], {}),
    ("rows of a dynamic-INT8 batch one at a time", ["args.row_threads=1"], {}),
    ("models autoscale to 2 replicas each", ["NER.autoscaling_config.max_replicas=2",
                                             "Sentiment.autoscaling_config.max_replicas=2"], {}),
]  # fmt: skip


def levers(
    report: Report, work: Path, lua: dict[str, Path], seconds: float, tier: dict[str, Any], only: str | None = None
) -> None:
    rows = []
    baseline: dict[str, float] = {}
    words = only.split(",") if only else []
    chosen = [lever for i, lever in enumerate(LEVERS) if i == 0 or not words or any(w in lever[0] for w in words)]
    for name, overrides, env in chosen:
        print(f"\n[levers] {name}", flush=True)
        service = start_zhserve("lever", work, overrides=overrides, env=env, args=tier)
        try:
            warm_up(service.url + "/v1/analyze", lua["text"])
            ner = wrk(service.url + "/v1/ner", lua["text"], 16, seconds, f"{name}: /v1/ner")
            analyze = wrk(service.url + "/v1/analyze", lua["text"], 16, seconds, f"{name}: /v1/analyze")
            batch = wrk(service.url + "/v1/batch", lua["batch"], 16, seconds, f"{name}: /v1/batch", BATCH_TEXTS)
        finally:
            stop_zhserve(service)
        if not baseline:
            baseline = {"ner": ner.rps, "analyze": analyze.rps, "batch": batch.items_per_s}
        rows.append([name, f"{ner.rps:.0f}", f"{ner.p99_ms:.0f}", ratio(ner.rps, baseline["ner"]), f"{analyze.rps:.0f}",
                     f"{analyze.p99_ms:.0f}", ratio(analyze.rps, baseline["analyze"]), f"{batch.items_per_s:.0f}",
                     ratio(batch.items_per_s, baseline["batch"])])  # fmt: skip
    report.table(
        "Each setting on and off (16 clients)",
        [
            "setting",
            "/v1/ner req/s",
            "p99 ms",
            "vs default",
            "/v1/analyze req/s",
            "p99 ms",
            "vs default",
            "/v1/batch texts/s",
            "vs default",
        ],
        rows,
        note="One setting changed at a time from `make run`'s configuration; every row a fresh start.",
    )


_TWINS: dict[Path, tuple[dict[str, Path], dict[str, Path]]] = {}


def base_twins(work: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """The BERT-base INT8 shape twins (exported directories, and their ModelScope-layout sources),
    built and exported once per run: the ``base`` and ``peers`` sections serve the same ones. A
    ``--work`` folder that already holds both (twins are seeded: the same code builds the same
    twins) is reused."""
    if work in _TWINS:
        return _TWINS[work]
    from training.export.exporter import export_model
    from training.export.twin import build_twin

    dirs = {task: work / f"twin-{task}" for task in ("ner", "sentiment")}
    sources = {task: work / f"twin-{task}-src" for task in ("ner", "sentiment")}
    if all((dirs[t] / "manifest.json").is_file() and sources[t].is_dir() for t in dirs):
        print(f"\n[base] BERT-base shape twins: reusing those in {work}", flush=True)
        _TWINS[work] = dirs, sources
        return dirs, sources
    print("\n[base] BERT-base shape twins: build and export", flush=True)
    for task in ("ner", "sentiment"):
        for path in (dirs[task], sources[task]):
            shutil.rmtree(path, ignore_errors=True)
        build_twin(task, "base", sources[task])  # type: ignore[arg-type]
        export_model(task, sources[task], dirs[task])  # type: ignore[arg-type]
    _TWINS[work] = dirs, sources
    return dirs, sources


def base_size(
    report: Report,
    work: Path,
    lua: dict[str, Path],
    seconds: float,
    clients: Sequence[int],
    *,
    every_route: bool = False,
) -> dict[tuple[str, int], Point]:
    """The ``base`` section; returns zhserve's points by (route key, clients): /v1/analyze, and with
    ``every_route`` (the ``peers`` headline needs them) /v1/ner and /v1/sentiment too."""
    dirs, sources = base_twins(work)
    seed_env = {"SEED_NER_MODEL": str(dirs["ner"]), "SEED_SENTIMENT_MODEL": str(dirs["sentiment"])}
    points: dict[tuple[str, int], Point] = {}
    runs = [
        ("seed, PyTorch FP32 + Flask + lock (as it ran)",
         {**seed_env, "SEED_NER_SOURCE": str(sources["ner"]), "SEED_SENTIMENT_SOURCE": str(sources["sentiment"])}),
        ("seed, INT8 twins + Flask + lock", seed_env),
    ]  # fmt: skip
    for name, env in runs:
        print(f"\n[base] {name}", flush=True)
        service = start_seed("seed-base", work, extra=env)
        try:
            warm_up(service.url + "/analyze", lua["text"])
            for count in clients:
                points[(name, count)] = wrk(service.url + "/analyze", lua["text"], count, seconds, f"{name} /analyze")
        finally:
            service.stop()
    name = "zhserve, INT8 twins"
    print(f"\n[base] {name}", flush=True)
    budget = [f"{d}.user_config.memory_limit_mb=2048" for d in ("NER", "Sentiment")]
    twins = {"ner_model": str(dirs["ner"]), "sentiment_model": str(dirs["sentiment"])}
    service = start_zhserve("zhserve-base", work, overrides=budget, args=twins, golden=False)
    try:
        warm_up(service.url + "/v1/analyze", lua["text"])
        for count in clients:
            points[(name, count)] = wrk(service.url + "/v1/analyze", lua["text"], count, seconds, f"{name} /v1/analyze")
        for route in ("ner", "sentiment") if every_route else ():
            path = ZHSERVE_ROUTES[route]
            for count in clients:
                points[(f"{name} {route}", count)] = wrk(service.url + path, lua["text"], count, seconds,
                                                         f"{name} {path}")  # fmt: skip
        replica_rows = stack_memory(service)
    finally:
        stop_zhserve(service)
    torch_name, int8_name = runs[0][0], runs[1][0]
    rows = []
    for count in clients:
        ours, torch_seed, int8_seed = points[(name, count)], points[(torch_name, count)], points[(int8_name, count)]
        rows.append([
            count, f"{torch_seed.rps:.1f} / {torch_seed.p99_ms:.0f}", f"{int8_seed.rps:.1f} / {int8_seed.p99_ms:.0f}",
            f"{ours.rps:.1f} / {ours.p99_ms:.0f}", ratio(ours.rps, torch_seed.rps), ratio(ours.rps, int8_seed.rps),
            ours.errors,
        ])  # fmt: skip
    report.table(
        "Production size: /v1/analyze on BERT-base shape twins",
        ["clients", "seed as it ran: PyTorch FP32 req/s / p99 ms", "seed on INT8 twins req/s / p99 ms",
         "zhserve req/s / p99 ms", "zhserve / seed as it ran", "zhserve / seed on INT8", "errors"],
        rows,
        note="Random weights of the real architectures (BERT-base, 21,128-token vocabulary) through the real export "
        "path; 2,048 MiB memory budget per replica. Replica memory at idle: "
        + "; ".join(f"{what}: {value}" for what, value in replica_rows[1:]) + ".",
    )  # fmt: skip
    ours = {("analyze", count): points[(name, count)] for count in clients}
    for route in ("ner", "sentiment") if every_route else ():
        ours.update({(route, count): points[(f"{name} {route}", count)] for count in clients})
    return ours


# ------------------------------------------------------------------------------------------
# Peers: the serving frameworks a user would pick instead, on the same model core


PEER_ROUTES = {"ner": "/ner", "sentiment": "/predict", "analyze": "/analyze"}
"""The seed design's routes (every peer serves the same ones, same JSON) by zhserve route key."""
ZHSERVE_ROUTES = {"ner": "/v1/ner", "sentiment": "/v1/sentiment", "analyze": "/v1/analyze"}
PEERS = {"flask": "Flask + lock", "gunicorn": "gunicorn -w 2", "mosec": "Mosec", "litserve": "LitServe"}
"""Every peer by key, in table order: the seed design (Flask + lock, and gunicorn with 2 workers)
and the two batching frameworks (``load_tests/peers/``, settings and reasons in their docstrings)."""
SIZES = {"embedded": "embedded models", "base": "BERT-base INT8 shape twins"}


def best_peer(points: dict[str, Point]) -> tuple[str, Point] | None:
    """The peer with the most requests per second (ties: the lower p99) among those that answered
    every request; ``None`` when none did. A peer with errors cannot be the one to beat."""
    clean = [(name, point) for name, point in points.items() if point.errors == 0 and point.requests > 0]
    if not clean:
        return None
    return max(clean, key=lambda item: (item[1].rps, -item[1].p99_ms))


def _rps(rps: float) -> str:
    return f"{rps:.1f}" if rps < 100 else f"{rps:.0f}"


def peer_cell(point: Point | None) -> str:
    """``req/s / p50 / p99 ms`` of one point, with its errors if any; ``–`` when not measured."""
    if point is None:
        return "–"
    text = f"{_rps(point.rps)} / {point.p50_ms:.1f} / {point.p99_ms:.1f}"
    return text + (f" ({point.errors} errors)" if point.errors else "")


def _at(points: dict[tuple[str, str, str, int], Point], size: str, route: str, count: int) -> dict[str, Point]:
    """Every peer's point at one size, route and client count, by peer key."""
    return {kind: points[(size, kind, route, count)] for kind in PEERS if (size, kind, route, count) in points}


def peer_rows(points: dict[tuple[str, str, str, int], Point], size: str, clients: Sequence[int]) -> list[list[str]]:
    """One row per route and client count: every peer's cell, then the best peer's name."""
    rows = []
    for route, path in PEER_ROUTES.items():
        for count in clients:
            found = _at(points, size, route, count)
            best = best_peer(found)
            rows.append([path, str(count), *(peer_cell(found.get(kind)) for kind in PEERS),
                         PEERS[best[0]] if best else "–"])  # fmt: skip
    return rows


def headline_rows(
    points: dict[tuple[str, str, str, int], Point],
    ours: dict[tuple[str, str, int], Point],
    sizes: Sequence[str],
    clients: Sequence[int],
) -> list[list[str]]:
    """zhserve against the best peer, per size, route and client count: the best peer's name and
    ``req/s / p99``, zhserve's (``ours``, keyed by size, route, clients; ``–`` when its section did
    not run) and zhserve's req/s over the best peer's."""
    rows = []
    for size in sizes:
        for route in PEER_ROUTES:
            for count in clients:
                found = _at(points, size, route, count)
                best = best_peer(found)
                if not found:
                    continue
                mine = ours.get((size, route, count))
                rows.append([
                    SIZES[size], ZHSERVE_ROUTES[route], str(count),
                    f"{PEERS[best[0]]}: {_rps(best[1].rps)} / {best[1].p99_ms:.1f}" if best else "–",
                    f"{_rps(mine.rps)} / {mine.p99_ms:.1f}" + (f" ({mine.errors} errors)" if mine.errors else "")
                    if mine else "–",
                    ratio(mine.rps, best[1].rps) if mine and best else "–",
                ])  # fmt: skip
    return rows


def reference_answers(ner_dir: Path, sentiment_dir: Path) -> dict[str, list[Any]]:
    """What the model core answers for each benchmark sentence, run alone, in this process."""
    from deployments.runtime.ner import NerModel
    from deployments.runtime.sentiment import SentimentModel

    ner = NerModel.from_model_dir(ner_dir, intra_op_threads=1)
    sentiment = SentimentModel.from_model_dir(sentiment_dir, intra_op_threads=1)
    return {
        "entities": [[e.to_dict() for e in ner.predict([text])[0]] for text in SENTENCES],
        "sentiment": [sentiment.predict([text])[0].to_dict() for text in SENTENCES],
    }


def answer_problems(url: str, reference: dict[str, list[Any]], *, golden: bool) -> list[str]:
    """Where a peer's answers on every route differ from the model core's: the entities (text, label,
    span) and the sentiment label of each benchmark sentence, and (``golden``) 马云 PER 8..10."""

    def spans(entities: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(e["text"], e["label"], e["start"], e["end"]) for e in entities]

    problems = []
    for index, text in enumerate(SENTENCES):
        answers = {}
        for route, path in PEER_ROUTES.items():
            response = httpx.post(url + path, json={"text": text}, timeout=60)
            if response.status_code != 200:
                problems.append(f"{path} answered {response.status_code}: {response.text[:200]}")
                continue
            answers[route] = response.json()
        want = spans(reference["entities"][index]), reference["sentiment"][index]["label"]
        got: dict[str, tuple[Any, Any]] = {}
        with contextlib.suppress(KeyError, TypeError):
            got["ner"] = spans(answers["ner"]["entities"]), want[1]
        with contextlib.suppress(KeyError, TypeError):
            got["sentiment"] = want[0], answers["sentiment"]["label"]
        with contextlib.suppress(KeyError, TypeError):
            got["analyze"] = spans(answers["analyze"]["ner"]["entities"]), answers["analyze"]["sentiment"]["label"]
        for route in answers:
            if got.get(route) != want:
                problems.append(f"{PEER_ROUTES[route]} on sentence {index}: {answers[route]} is not {want}")
        if golden and index == 0 and "analyze" in got and GOLDEN not in got["analyze"][0]:
            problems.append(f"/analyze lacks the golden entity {GOLDEN}")
    return problems


def start_peer(kind: str, work: Path, ner_dir: Path, sentiment_dir: Path) -> Service:
    """A peer on the given model directories, on a free loopback port, ready when /ner answers."""
    if kind in ("flask", "gunicorn"):
        extra = {"SEED_NER_MODEL": str(ner_dir), "SEED_SENTIMENT_MODEL": str(sentiment_dir)}
        return start_seed(f"peer-{kind}", work, gunicorn=kind == "gunicorn", extra=extra)
    port = free_port()
    command = [PYTHON, f"load_tests/peers/{kind}_server.py", "--port", str(port), "--ner-model", str(ner_dir),
               "--sentiment-model", str(sentiment_dir), "--workers", str(os.cpu_count() or 1)]  # fmt: skip

    def ready(service: Service) -> bool:
        return httpx.post(f"{service.url}/ner", json={"text": SENTENCES[0]}, timeout=30).status_code == 200

    return start(f"peer-{kind}", command, env=dict(os.environ), ready=ready, port=port, work=work)


def peers(
    report: Report,
    work: Path,
    lua: dict[str, Path],
    seconds: float,
    clients: Sequence[int],
    *,
    sizes: Sequence[str],
    kinds: Sequence[str],
    tier: dict[str, str],
    seed: dict[tuple[str, str, int], Point],
    ours: dict[tuple[str, str, int], Point],
) -> None:
    """The ``peers`` section: every peer at both sizes, every route, every client count, and the
    headline, zhserve / the best peer. ``seed`` (the seed section's points, embedded models) is
    reused rather than measured again; ``ours`` holds zhserve's points by (size, route, clients)."""
    points: dict[tuple[str, str, str, int], Point] = {}
    broken: list[str] = []
    reused_seed = False
    for size in sizes:
        if size == "base":
            dirs, _ = base_twins(work)
            ner_dir, sentiment_dir = dirs["ner"], dirs["sentiment"]
        else:
            ner_dir, sentiment_dir = Path(tier["ner_model"]), Path(tier["sentiment_model"])
        reference: dict[str, list[Any]] = {}
        for kind in kinds:
            reused = {(route, count): seed[(kind, route, count)] for route in PEER_ROUTES for count in clients
                      if size == "embedded" and (kind, route, count) in seed}  # fmt: skip
            if len(reused) == len(PEER_ROUTES) * len(clients):
                print(f"\n[peers] {PEERS[kind]}, {SIZES[size]}: the seed section's points", flush=True)
                points.update({(size, kind, route, count): point for (route, count), point in reused.items()})
                reused_seed = True
                continue
            print(f"\n[peers] {PEERS[kind]}, {SIZES[size]}", flush=True)
            reference = reference or reference_answers(ner_dir, sentiment_dir)
            service = start_peer(kind, work, ner_dir, sentiment_dir)
            try:
                problems = answer_problems(service.url, reference, golden=size == "embedded")
                if problems:
                    raise RuntimeError(f"{PEERS[kind]} gives wrong answers: " + "; ".join(problems[:5]))
                print(f"  answers checked: {len(SENTENCES)} sentences × {len(PEER_ROUTES)} routes match the model core",
                      flush=True)  # fmt: skip
                warm_up(service.url + "/analyze", lua["text"])
                for route, path in PEER_ROUTES.items():
                    for count in clients:
                        points[(size, kind, route, count)] = wrk(service.url + path, lua["text"], count, seconds,
                                                                 f"{kind} {size} {path}")  # fmt: skip
                problems = answer_problems(service.url, reference, golden=size == "embedded")
                if problems:  # after load: keep the figures, say the answers went wrong
                    broken.append(f"{PEERS[kind]} ({SIZES[size]}) after load: " + "; ".join(problems[:3]))
                    print(f"  ! {broken[-1]}", flush=True)
            finally:
                service.stop()
    measured = [size for size in sizes if any(key[0] == size for key in points)]
    if not measured:
        return
    have_ours = any(key[0] in measured for key in ours)
    report.table(
        "zhserve / the best peer, per route",
        ["size", "route", "clients", "best peer req/s / p99 ms", "zhserve req/s / p99 ms", "zhserve / best peer"],
        headline_rows(points, ours, measured, clients),
        note="The best peer is the one of " + ", ".join(PEERS[k] for k in kinds) + " with the most requests per "
        "second at that route and client count (answering every request); the peers' own tables follow. "
        + ("" if have_ours else "zhserve was not measured in this run (add the `zhserve` and `base` sections). ")
        + "At BERT-base size zhserve's figures are the `base` section's (the same twins).",
    )  # fmt: skip
    for size in measured:
        report.table(
            f"The peers on the same model core: {SIZES[size]}",
            ["route", "clients", *(f"{name} req/s / p50 / p99 ms" for name in PEERS.values()), "best peer"],
            peer_rows(points, size, clients),
            note="Same routes, JSON and model core (`deployments.runtime`, one intra-op thread per process) for every "
            "peer; Mosec and LitServe as their documentation recommends for batched CPU inference (one worker per core "
            "and stage, batches of up to 16, 10 ms batch wait; the settings and the quotes behind them are in "
            "`load_tests/peers/mosec_server.py` and `litserve_server.py`). Every peer this section started gave the "
            "model core's answers (entities and sentiment label of each sentence, every route) before and after its "
            "load." + (" Flask's and gunicorn's points are the seed section's." if reused_seed else "")
            + (" Wrong answers after load: " + "; ".join(broken) + "." if broken else ""),
        )  # fmt: skip


def write_markdown(path: Path, report: Report, started: dt.datetime, idle: float, tiers: str) -> None:
    header = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`load_tests/bench.py`) on {started:%Y-%m-%d %H:%M} UTC; machine: {machine()}; "
        f"commit {commit()}; models {tiers}. CPU idle before the run: {idle:.0%}. "
        "Every figure below was measured in this one run; "
        "ratios compare figures measured side by side. Figures move with the machine: compare ratios, not "
        "absolute numbers, across machines.",
        "",
    ]
    path.write_text("\n".join(header + report.lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
