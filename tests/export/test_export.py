"""Exporting tiny twins end to end: parity, agreement, manifest, serving-side loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from deployments.runtime.model_dir import ModelDir  # noqa: E402
from training.export.errors import CheckFailedError, ExportError  # noqa: E402
from training.export.exporter import export_model  # noqa: E402
from training.export.twin import RANER_NEWS_LABELS  # noqa: E402

pytestmark = pytest.mark.export
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("variant", ["ner", "ner-no-head-prefix", "sentiment"])
def test_export_twin(twins: dict[str, Path], tmp_path: Path, variant: str) -> None:
    task = "sentiment" if variant == "sentiment" else "ner"
    result = export_model(task, twins[variant], tmp_path / "out")
    assert result.parity.max_abs_diff <= 1e-4
    assert result.parity.crf_paths_identical is (True if task == "ner" else None)
    assert result.agreement is not None and 0.0 <= result.agreement.value <= 1.0

    model_dir = ModelDir.load(tmp_path / "out")  # checksums verified
    manifest = model_dir.manifest
    assert manifest.task == task
    assert manifest.max_seq_length == 512
    assert manifest.tokenizer.lowercase is True
    assert manifest.onnx.inputs == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifest.quantization == "int8-dynamic"
    assert manifest.provenance["exporter"] == "zhserve-models"
    assert manifest.provenance["twin"]["size"] == "tiny"
    assert manifest.provenance["int8_agreement"]["enforced"] is False
    assert (tmp_path / "out" / "vocab.txt").read_bytes() == (twins[variant] / "vocab.txt").read_bytes()
    assert not (tmp_path / "out.partial").exists()
    if task == "ner":
        assert manifest.labels == list(RANER_NEWS_LABELS)
        assert (manifest.tag_scheme, manifest.decoder, manifest.onnx.output) == ("BIOES", "crf", "emissions")
        with np.load(tmp_path / "out" / "crf.npz") as crf:
            assert crf["transitions"].shape == (13, 13)
    else:
        assert manifest.labels == ["negative", "positive"]
        assert manifest.onnx.output == "logits"
        assert manifest.provenance["source_labels"] == ["负面", "正面"]


def test_onnx_has_dynamic_batch_and_sequence(twins: dict[str, Path], tmp_path: Path) -> None:
    import onnxruntime as ort

    export_model("ner", twins["ner"], tmp_path / "out", int8=False)
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch, length in ((1, 3), (4, 77)):
        feeds = {
            "input_ids": np.full((batch, length), 101, dtype=np.int64),
            "attention_mask": np.ones((batch, length), dtype=np.int64),
            "token_type_ids": np.zeros((batch, length), dtype=np.int64),
        }
        assert session.run(["emissions"], feeds)[0].shape == (batch, length, 13)
    assert ModelDir.load(tmp_path / "out").manifest.quantization == "none"


def test_agreement_gate_fires_when_enforced(
    twins: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A faithful INT8 copy of a random twin may or may not clear 98 % (it depends on the runtime's
    # kernels), so the INT8 step is made to write a genuinely different network of the same shape:
    # the other twin's weights. The real agreement check then measures real disagreement.
    import training.export.exporter as exporter

    other = tmp_path / "other"
    export_model("ner", twins["ner-no-head-prefix"], other, int8=False)
    quantize = exporter._quiet_quantize
    monkeypatch.setattr(exporter, "_quiet_quantize", lambda _fp32, int8_path: quantize(other / "model.onnx", int8_path))
    with pytest.raises(CheckFailedError, match="INT8 disagrees with FP32"):
        export_model("ner", twins["ner"], tmp_path / "out", enforce_agreement=True)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_refuses_to_overwrite(twins: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        export_model("sentiment", twins["sentiment"], tmp_path / "out")


def run_cli(*args: str, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training.export.cli", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_cli_reports_unknown_model_type_without_traceback(twins: dict[str, Path], tmp_path: Path) -> None:
    completed = run_cli("export", "--task", "sentiment", "--source", str(twins["ner"]), "--out",
                        str(tmp_path / "out"), timeout=120)  # fmt: skip
    assert completed.returncode == 2
    assert "error:" in completed.stderr and "supported: structbert, bert" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_cli_download_failure_is_one_clear_error(tmp_path: Path) -> None:
    """The hub is unreachable here: the download must fail fast with one readable error."""
    pytest.importorskip("modelscope")
    fast_fail = {
        "MODELSCOPE_API_MAX_RETRIES": "1",
        "MODELSCOPE_DOWNLOAD_MAX_RETRIES": "1",
        "MODELSCOPE_API_TIMEOUT": "5",
        "MODELSCOPE_API_CONNECT_TIMEOUT": "3",
        "MODELSCOPE_CACHE": str(tmp_path / "cache"),
    }
    try:
        completed = run_cli("export", "--task", "ner", "--source",
                            "damo/nlp_raner_named-entity-recognition_chinese-base-news",
                            "--out", str(tmp_path / "out"), timeout=45, env=fast_fail)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.skip("the hub neither answered nor failed within 45 s")
    if completed.returncode == 0:
        pytest.skip("the ModelScope hub is reachable from this machine")
    assert completed.returncode == 2
    assert "error: could not download damo/nlp_raner_named-entity-recognition_chinese-base-news" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "out").exists()


def test_cli_twin_then_export(tmp_path: Path) -> None:
    completed = run_cli("twin", "--task", "sentiment", "--size", "tiny", "--out", str(tmp_path / "src"), timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert json.loads((tmp_path / "src" / "config.json").read_text(encoding="utf-8"))["id2label"] == {
        "0": "负面",
        "1": "正面",
    }
    completed = run_cli("export", "--task", "sentiment", "--source", str(tmp_path / "src"), "--out",
                        str(tmp_path / "out"), timeout=120)  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "[8/8] write model directory done" in completed.stderr
    assert "INT8 label agreement" in completed.stdout
