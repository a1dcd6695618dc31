"""``export_model``: a ModelScope RaNER / StructBERT directory → a zhserve model directory.

Steps: fetch (local or hub) → read layout → load weights into torch → ONNX export → parity check →
INT8 quantisation → agreement check → write the model directory (manifest with checksums and
provenance). Everything is written to ``<out>.partial`` first and moved into place at the end, so a
failed export never leaves a half-written model directory behind.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import platform
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
import transformers

from deployments.runtime.model_dir import Manifest, OnnxSpec, TokenizerSpec, sha256_file, write_manifest
from deployments.runtime.tokenizer import BertChineseTokenizer
from training.export import EXPORTER_NAME, EXPORTER_VERSION
from training.export.checks import AgreementReport, ParityReport, agreement_check, crf_params, parity_check
from training.export.download import fetch_source
from training.export.errors import CheckFailedError, ExportError
from training.export.layouts import (
    CONFIG_FILE,
    CONFIGURATION_FILE,
    LABEL_MAPPING_FILE,
    VOCAB_FILE,
    WEIGHTS_FILE,
    SourceModel,
    Task,
    read_source,
)
from training.export.modules import TokenClassifierWithCrf, load_source_module
from training.export.onnx_export import ONNX_INPUTS, ONNX_OUTPUT, OPSET, export_onnx, quantize_int8
from training.export.progress import Progress, Silent
from training.export.samples import SAMPLE_SENTENCES
from training.export.twin import TWIN_MARKER

MODEL_FILE = "model.onnx"
FP32_FILE = "model.fp32.onnx"
CRF_FILE = "crf.npz"
STEPS = (
    "fetch source",
    "read layout",
    "load weights",
    "export ONNX",
    "parity check",
    "quantise INT8",
    "agreement check",
    "write model directory",
)


@dataclass(frozen=True)
class ExportResult:
    out: Path
    manifest: Manifest
    parity: ParityReport
    agreement: AgreementReport | None
    fp32_bytes: int
    int8_bytes: int | None
    durations: dict[str, float]

    @property
    def seconds(self) -> float:
        return sum(self.durations.values())


def export_model(
    task: Task,
    source: str | Path,
    out: str | Path,
    *,
    revision: str | None = None,
    int8: bool = True,
    cache_dir: str | Path | None = None,
    keep_fp32: bool = False,
    overwrite: bool = False,
    name: str | None = None,
    version: str | None = None,
    sentences: Sequence[str] = SAMPLE_SENTENCES,
    enforce_agreement: bool | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Export ``source`` (a ModelScope model id or local directory) for ``task`` into ``out``.

    Raises :class:`~training.export.errors.ExportError` subclasses with a one-line explanation:
    unknown model type, missing label mapping, failed download, a checkpoint that does not fit, or a
    parity / agreement check that failed.

    ``enforce_agreement`` (default: yes, except for shape twins) makes an INT8 agreement below its
    minimum an error. A twin's random weights give near-tied scores that quantisation flips, and it
    has no accuracy to protect, so for twins the figure is measured and recorded but not enforced.
    """
    progress = progress if progress is not None else Silent()
    target = Path(out)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise ExportError(f"{target} exists and is not empty; choose another --out or pass --overwrite")
    staging = target.with_name(target.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)

    try:
        with progress.step(STEPS[0]):
            fetched = fetch_source(str(source), revision=revision, cache_dir=cache_dir)
            progress.note(f"{'downloaded to' if fetched.from_hub else 'local directory'} {fetched.path}")
        with progress.step(STEPS[1]):
            layout = read_source(fetched.path, task)
            progress.note(
                f"{layout.model_type} / encoder {layout.encoder_type}, {len(layout.labels)} labels "
                f"from {layout.label_source}"
            )
            is_twin = (layout.path / TWIN_MARKER).is_file()
            if enforce_agreement is None:
                enforce_agreement = not is_twin
            if is_twin:
                progress.note("shape twin (random weights): INT8 agreement is reported, not enforced")
        with progress.step(STEPS[2]):
            module, load_report = load_source_module(layout)
            progress.note(f"{load_report.loaded} tensors loaded; ignored {load_report.ignored or 'none'}")
        tokenizer = BertChineseTokenizer.from_vocab_file(layout.vocab, lowercase=True)
        if tokenizer.vocab_size != layout.encoder_config["vocab_size"]:
            raise ExportError(
                f"{layout.vocab} has {tokenizer.vocab_size} tokens; config.json says "
                f"vocab_size {layout.encoder_config['vocab_size']}"
            )
        fp32_path = staging / FP32_FILE
        with progress.step(STEPS[3]):
            export_onnx(module, task, fp32_path)
        with progress.step(STEPS[4]):
            parity = parity_check(module, task, fp32_path, tokenizer, sentences, max_seq_length=layout.max_seq_length)
            progress.note(
                f"max |ONNX − torch| = {parity.max_abs_diff:.2e} (limit {parity.tolerance:.0e})"
                + ("" if parity.crf_paths_identical is None else f"; CRF paths identical: {parity.crf_paths_identical}")
            )
            if not parity.passed:
                raise CheckFailedError(
                    f"ONNX FP32 does not match torch: max |difference| {parity.max_abs_diff:.3g} "
                    f"(limit {parity.tolerance:.0e}), {parity.crf_path_mismatches} CRF paths differ"
                )
        crf = crf_params(module) if isinstance(module, TokenClassifierWithCrf) else None
        agreement: AgreementReport | None = None
        if int8:
            int8_path = staging / MODEL_FILE
            with progress.step(STEPS[5]):
                _quiet_quantize(fp32_path, int8_path)
            with progress.step(STEPS[6]):
                agreement = agreement_check(
                    task, fp32_path, int8_path, tokenizer, sentences,
                    max_seq_length=layout.max_seq_length, labels=layout.labels, crf=crf,
                )  # fmt: skip
                progress.note(
                    f"{agreement.metric}: {agreement.value:.1%} (minimum {agreement.threshold:.0%}); "
                    f"{agreement.identical_outputs}/{agreement.sentences} sentences identical"
                )
                if enforce_agreement and not agreement.passed:
                    raise CheckFailedError(
                        f"INT8 disagrees with FP32: {agreement.metric} {agreement.value:.1%} is below "
                        f"{agreement.threshold:.0%}; export with --no-int8 to ship FP32"
                    )
        else:
            with progress.step(STEPS[5] + " (skipped: --no-int8)"):
                pass
            with progress.step(STEPS[6] + " (skipped: --no-int8)"):
                pass
        with progress.step(STEPS[7]):
            fp32_bytes = fp32_path.stat().st_size
            int8_bytes = (staging / MODEL_FILE).stat().st_size if int8 else None
            if not int8:
                fp32_path.replace(staging / MODEL_FILE)
            elif not keep_fp32:
                fp32_path.unlink()
            manifest = _write_directory(
                staging, layout, fetched_model_id=fetched.model_id, revision=revision,
                from_hub=fetched.from_hub, int8=int8, crf=crf, parity=parity, agreement=agreement,
                name=name, version=version, ignored_keys=load_report.ignored,
                agreement_enforced=bool(enforce_agreement),
            )  # fmt: skip
            if target.exists():
                shutil.rmtree(target)
            staging.replace(target)
            progress.note(f"wrote {target}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(
        out=target,
        manifest=manifest,
        parity=parity,
        agreement=agreement,
        fp32_bytes=fp32_bytes,
        int8_bytes=int8_bytes,
        durations=dict(progress.durations),
    )


def _quiet_quantize(fp32_path: Path, int8_path: Path) -> None:
    # onnxruntime.quantization logs a "consider pre-processing" warning on the root logger every time.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_int8(fp32_path, int8_path)
    finally:
        root.setLevel(level)


def _default_name(layout: SourceModel, model_id: str | None) -> str:
    base = model_id.split("/")[-1] if model_id else layout.path.name
    return base.replace("_", "-").lower()


def _write_directory(
    staging: Path,
    layout: SourceModel,
    *,
    fetched_model_id: str | None,
    revision: str | None,
    from_hub: bool,
    int8: bool,
    crf: Any,
    parity: ParityReport,
    agreement: AgreementReport | None,
    name: str | None,
    version: str | None,
    ignored_keys: list[str],
    agreement_enforced: bool,
) -> Manifest:
    shutil.copyfile(layout.vocab, staging / VOCAB_FILE)
    if crf is not None:
        np.savez(
            staging / CRF_FILE,
            start_transitions=crf.start_transitions.astype(np.float32),
            end_transitions=crf.end_transitions.astype(np.float32),
            transitions=crf.transitions.astype(np.float32),
        )
    twin = _twin_info(layout.path)
    source_files = [CONFIGURATION_FILE, CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE, LABEL_MAPPING_FILE]
    provenance: dict[str, Any] = {
        "source": "modelscope" if from_hub else "local",
        "model_id": fetched_model_id,
        "revision": revision,
        "local_path": str(layout.path),
        "modelscope_model_type": layout.model_type,
        "encoder_type": layout.encoder_type,
        "labels_from": layout.label_source,
        "source_labels": layout.source_labels,
        "source_sha256": {
            file: sha256_file(layout.path / file) for file in source_files if (layout.path / file).is_file()
        },
        "ignored_checkpoint_keys": ignored_keys,
        "exporter": EXPORTER_NAME,
        "exporter_version": EXPORTER_VERSION,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "toolchain": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__,
            "opset": OPSET,
        },
        "parity": parity.to_dict(),
        "int8_agreement": {**agreement.to_dict(), "enforced": agreement_enforced} if agreement else None,
    }
    if twin is not None:
        provenance["twin"] = twin
    architecture = (
        f"{'RaNER transformer-crf' if layout.task == 'ner' else 'StructBERT sequence classification'}: "
        f"{layout.encoder_type} {layout.encoder_config['num_hidden_layers']} layers, "
        f"hidden {layout.encoder_config['hidden_size']}, vocabulary {layout.encoder_config['vocab_size']}"
        + (" — SHAPE TWIN, random weights" if twin is not None else "")
    )
    manifest = Manifest(
        name=name or _default_name(layout, fetched_model_id),
        version=version or revision or (f"twin-{twin['size']}" if twin else "local"),
        task=layout.task,
        architecture=architecture,
        labels=layout.labels,
        tag_scheme="BIOES" if layout.task == "ner" else None,
        decoder="crf" if layout.task == "ner" else None,
        crf=CRF_FILE if layout.task == "ner" else None,
        max_seq_length=layout.max_seq_length,
        tokenizer=TokenizerSpec(vocab=VOCAB_FILE, lowercase=True),
        onnx=OnnxSpec(model=MODEL_FILE, inputs=list(ONNX_INPUTS), output=ONNX_OUTPUT[layout.task]),
        quantization="int8-dynamic" if int8 else "none",
        provenance=provenance,
    )
    return write_manifest(staging, manifest)


def _twin_info(path: Path) -> dict[str, Any] | None:
    marker = path / TWIN_MARKER
    if not marker.is_file():
        return None
    info = json.loads(marker.read_text(encoding="utf-8"))
    return dict(info)
