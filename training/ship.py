"""The ship step every recipe ends with: a trained network → a model directory with its card.

Export the network to FP32 ONNX (kept under the run directory), quantise it to the shipped INT8
``model.onnx``, write ``crf.npz`` (NER) and ``manifest.json``, then load the directory back through
the serving model core (``deployments.runtime``, checksums verified) and score the FP32 export and the
INT8 model on every dev split with it, exactly as ``zhserve-eval --model-dir`` does; measure the INT8
latency; and write the typed report (``<run>/<task>_report.json``) and ``MODEL_CARD.md`` from it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from deployments.runtime.crf import CrfParams
from deployments.runtime.model_dir import Manifest, ModelDir, write_manifest
from deployments.runtime.ner import NerModel
from deployments.runtime.sentiment import SentimentModel
from deployments.runtime.session import create_session
from deployments.runtime.tokenizer import Tokenizer
from training.evaluate import CorePredictor, evaluate
from training.model_card import write_model_card
from training.onnx_io import export_onnx, quantize_int8, session
from training.report import Evaluation, Latency, NerEvaluation, SentimentEvaluation, TrainingReport

log = logging.getLogger("zhserve.train")

EXPERIMENTS = Path(__file__).parent / "experiments"
LATENCY_SENTENCE = "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授，双方就人工智能合作进行了深入交流。"
SCORE_BATCH_SIZE = 64


@dataclass
class ShipSpec:
    """What to ship and where. ``manifest`` has everything but the files' checksums (written here)."""

    network: nn.Module
    manifest: Manifest
    out: Path  # the model directory
    run_dir: Path  # FP32 export, report
    dev: dict[str, list[dict]]  # split → rows in the shared JSONL format
    sources: dict[str, str]  # corpus file → its role, for the card
    command: str  # how the model was trained, for the card
    threads: int
    crf: dict[str, np.ndarray] | None = None  # NER: the CRF's arrays for crf.npz

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def fp32_path(self) -> Path:
        return self.run_dir / f"{self.task}_fp32.onnx"


def median_latency_ms(model_path: Path, tokenizer: Tokenizer, max_length: int, runs: int = 200) -> Latency:
    """Median/p90 ms for one 50-character sentence through ONNX Runtime, 1 intra-op thread, tokenisation included."""
    sentence = LATENCY_SENTENCE[:50]
    sess = session(model_path, threads=1)
    feeds = tokenizer.encode_batch([sentence], max_length=max_length).feeds(["input_ids", "attention_mask"])
    for _ in range(20):
        sess.run(None, feeds)
    timings = []
    for _ in range(runs):
        begin = time.perf_counter()
        batch = tokenizer.encode_batch([sentence], max_length=max_length)
        sess.run(None, batch.feeds(["input_ids", "attention_mask"]))
        timings.append((time.perf_counter() - begin) * 1000)
    timings.sort()
    return Latency(
        median=round(timings[len(timings) // 2], 3), p90=round(timings[int(len(timings) * 0.9)], 3), chars=len(sentence)
    )


def _core_model(model_dir: ModelDir, onnx_path: Path, threads: int) -> NerModel | SentimentModel:
    """The serving model class over ``model_dir`` with the network at ``onnx_path`` (the shipped INT8 file,
    or the FP32 export, which has the same inputs, output and batch independence)."""
    manifest = model_dir.manifest
    sess = create_session(onnx_path, intra_op_threads=threads)
    tokenizer = Tokenizer.from_model_dir(model_dir)
    if manifest.task == "ner":
        crf = CrfParams.load(model_dir.file(manifest.crf)) if manifest.crf else None
        return NerModel(model_dir, sess, tokenizer, crf)
    return SentimentModel(model_dir, sess, tokenizer)


def score(model_dir: ModelDir, fp32_path: Path, dev: dict[str, list[dict]], threads: int) -> dict[str, dict]:
    """Each dev split scored with the FP32 export and the shipped INT8 model, through the model core."""
    task = model_dir.manifest.task
    scores: dict[str, dict] = {name: {} for name in dev}
    for variant, path in (("fp32", fp32_path), ("int8", model_dir.file(model_dir.manifest.onnx.model))):
        predictor = CorePredictor(_core_model(model_dir, path, threads), batch_size=SCORE_BATCH_SIZE)
        for name, rows in dev.items():
            result = evaluate(rows, task, predictor)
            scores[name][variant] = result["scores"]
            headline = result["scores"]["micro"]["f1"] if task == "ner" else result["scores"]["accuracy"]
            log.info("%s %s %s: %s %.4f", task, variant, name, "micro F1" if task == "ner" else "accuracy", headline)
    return scores


@contextlib.contextmanager
def staged_model_dir(model_dir: Path) -> Iterator[Path]:
    """A ``<name>.partial`` folder to fill; it replaces ``model_dir`` only when the block succeeds, so a
    failed export never leaves a half-written model directory under the served name."""
    staged = model_dir.with_name(model_dir.name + ".partial")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    yield staged
    shutil.rmtree(model_dir, ignore_errors=True)
    staged.rename(model_dir)


def write_model_dir(
    out: Path,
    manifest: Manifest,
    *,
    files: Mapping[str, Path] | None = None,
    crf: Mapping[str, np.ndarray] | None = None,
) -> Manifest:
    """Fill the model directory ``out``: a copy of each of ``files`` under its name, the CRF's arrays in the
    manifest's ``crf`` file, and ``manifest.json`` with every file's checksum (the manifest written is returned)."""
    for name, source in (files or {}).items():
        shutil.copy(source, out / name)
    if crf is not None:
        assert manifest.crf, "a CRF is shipped only with a manifest naming its file"
        # (The ignore: numpy's stub lets ** reach ``allow_pickle: bool``.)
        np.savez(out / manifest.crf, **crf)  # type: ignore[arg-type]
    return write_manifest(out, manifest)


def ship(spec: ShipSpec, make_report: Callable[[Evaluation], TrainingReport]) -> tuple[Manifest, TrainingReport]:
    """Export, quantise, write the model directory, score it, and write the report and the card.

    ``make_report`` builds the recipe's report around what this step measured.
    """
    out = spec.out
    export_onnx(spec.network, spec.fp32_path, output_name=spec.manifest.onnx.output)
    quantize_int8(spec.fp32_path, out / spec.manifest.onnx.model)
    manifest = write_model_dir(out, spec.manifest, crf=spec.crf)
    model_dir = ModelDir.load(out)
    scores = score(model_dir, spec.fp32_path, spec.dev, spec.threads)
    latency = median_latency_ms(
        model_dir.file(manifest.onnx.model), Tokenizer.from_model_dir(model_dir), manifest.max_seq_length
    )
    evaluation_class = NerEvaluation if spec.task == "ner" else SentimentEvaluation
    evaluation = evaluation_class(
        scores=scores,
        latency_ms=latency,
        sizes={p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()},
        fp32_bytes=spec.fp32_path.stat().st_size,
    )
    report = make_report(evaluation)
    write_model_card(
        out, manifest, report, spec.sources, command=spec.command, experiments_file=EXPERIMENTS / f"{spec.task}.md"
    )
    report.write(spec.run_dir / f"{spec.task}_report.json")
    return manifest, report
