"""Does serving-level batching pay at production size? Batched against per-row ONNX calls on the
BERT-base INT8 shape twins, in process, one thread per session, side by side in one run.

    .venv/bin/python load_tests/batching.py [--work DIR] [--repeats 20]

For short rows (a news sentence, ~30 tokens) and 128-token rows: milliseconds of one core per row
run one row per call (what a dynamic-INT8 model's replica does), B rows padded into one call
(B = 4, 16), B rows of equal length in one call (length buckets: no padding), and two per-row
calls at once on two threads (``row_threads: 2``, per row of wall time). Beside each batched
figure, how far its answers move from the per-row answers (largest emission difference, and the
share of tags that change): dynamic INT8 quantises each call's activations with one scale for the
whole tensor, so a row's answer depends on the rows it is batched with. A script: asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deployments.runtime.model_dir import ModelDir
from deployments.runtime.session import create_session
from deployments.runtime.tokenizer import Tokenizer
from load_tests.bench import SENTENCES, Report, base_twins


def timed(run: object, repeats: int) -> float:
    """Median seconds of ``run()`` over ``repeats`` (after one warm-up)."""
    run()  # type: ignore[operator]
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()  # type: ignore[operator]
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


class Runner:
    """One model directory's session(s) and how rows become its feeds."""

    def __init__(self, path: Path) -> None:
        model_dir = ModelDir.load(path, verify_checksums=False)
        self.manifest = model_dir.manifest
        self.sessions = [create_session(model_dir.file(self.manifest.onnx.model), intra_op_threads=1) for _ in range(2)]
        self.tokenizer = Tokenizer.from_model_dir(model_dir)

    def run(self, batch: list[np.ndarray], session: int = 0) -> np.ndarray:
        feeds = self.tokenizer.pad(batch, max_length=self.manifest.max_seq_length).feeds(self.manifest.onnx.inputs)
        return np.asarray(self.sessions[session].run([self.manifest.onnx.output], feeds)[0])


def measure(task: str, runner: Runner, kind: str, rows: list[np.ndarray], repeats: int) -> list[str]:
    per_row_s = timed(lambda: [runner.run([row]) for row in rows[:4]], repeats) / 4
    reference = [runner.run([row]) for row in rows]
    with ThreadPoolExecutor(2) as pool:
        pair_s = timed(lambda: list(pool.map(lambda i: runner.run([rows[i]], i % 2), range(4))), repeats) / 4
    line = [task, kind, f"{per_row_s * 1000:.2f}", f"{pair_s * 1000:.2f}"]
    for size in (4, 16):
        batch = rows[:size]
        call_s = timed(lambda batch=batch: runner.run(batch), repeats) / size
        got = runner.run(batch)
        diffs, changed, total = [], 0, 0
        for index, row_answer in enumerate(reference[:size]):
            mine = got[index : index + 1, : row_answer.shape[1]] if row_answer.ndim == 3 else got[index : index + 1]
            diffs.append(float(np.max(np.abs(mine - row_answer))))
            labels = np.argmax(row_answer, axis=-1)
            changed += int(np.sum(np.argmax(mine, axis=-1) != labels))
            total += int(labels.size)
        line.append(f"{call_s * 1000:.2f} (Δ {max(diffs):.3f}, {changed / total:.1%} changed)")
    return line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (reuses twins built there)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path)
    options = parser.parse_args(argv)
    work = options.work or Path(tempfile.mkdtemp(prefix="zhserve-batching-"))
    dirs, _ = base_twins(work)
    lines = []
    for task in ("ner", "sentiment"):
        runner = Runner(dirs[task])
        encoded = [runner.tokenizer.encode([sentence])[0].ids for sentence in SENTENCES]
        long_ids = runner.tokenizer.encode(["".join(SENTENCES) * 2])[0].ids
        kinds = {
            "short (news/review sentences)": [encoded[i % len(encoded)] for i in range(16)],
            "128 tokens": [long_ids[i * 7 : i * 7 + 126] for i in range(16)],
        }
        for kind, rows in kinds.items():
            lines.append(measure(task, runner, kind, rows, options.repeats))
            print(" | ".join(lines[-1]), flush=True)
    header = ["model", "rows", "per row, ms", "2 per-row calls at once, ms per row"]
    header += ["batch of 4, ms per row", "batch of 16, ms per row"]
    report = Report()
    report.table(
        "Batching at production size (BERT-base INT8 twins, one thread per session)",
        header,
        lines,
        "Δ: the largest difference of a batched row's outputs (emissions or logits) from its per-row answer; "
        "changed: tags (or labels) that differ. Batches are padded to their longest row.",
    )
    if options.out:
        with open(options.out, "a", encoding="utf-8") as handle:
            handle.write("\n".join(report.lines) + "\n")


if __name__ == "__main__":
    main()
