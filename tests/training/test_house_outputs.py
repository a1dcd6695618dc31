"""The training house writes what it wrote before: every recipe's manifest, card and report byte for byte,
its loop's history and weights, and its ONNX outputs on fixed inputs within 1e-6, against ``golden/house``
(written by ``python -m tests.training.house_outputs tests/training/golden/house`` before the recipes
shared one loop, one ship step and one report; rewrite it only for a change that means to alter them)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from tests.training.house_outputs import write_all

GOLDEN = Path(__file__).parent / "golden" / "house"


def test_the_house_writes_its_golden_outputs(tmp_path) -> None:
    out = tmp_path / "out"
    (tmp_path / "work").mkdir()
    write_all(out, tmp_path / "work")
    golden = sorted(p.relative_to(GOLDEN) for p in GOLDEN.rglob("*") if p.is_file())
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == golden
    for name in golden:
        if name.name == "onnx_outputs.json":
            fresh, kept = (json.loads((root / name).read_text()) for root in (out, GOLDEN))
            for variant in kept:
                np.testing.assert_allclose(
                    fresh[variant], kept[variant], rtol=0, atol=1e-6, err_msg=f"{name} {variant}"
                )
        elif name.suffix == ".json" and not STRICT:
            fresh, kept = (_portable(json.loads((root / name).read_text())) for root in (out, GOLDEN))
            assert fresh == kept, name
        else:
            assert (out / name).read_text(encoding="utf-8") == (GOLDEN / name).read_text(encoding="utf-8"), name


STRICT = os.environ.get("ZHSERVE_GOLDEN_STRICT") == "1"
"""Byte for byte everywhere, digests included: the check of a restructure on the machine that wrote the
golden files. Without it (CI, another machine) the JSON files are compared with their sha256 digests
(files, weights) masked and floats rounded to 4 decimals, since another CPU's kernels may move the last
bits of a float and so every digest; the cards and the ONNX outputs (within 1e-6) are compared as ever."""


def _portable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _portable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_portable(item) for item in value]
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return "<sha256>"
    return value
