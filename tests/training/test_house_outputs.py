"""The training house writes what it wrote before: every recipe's manifest, card and report byte for byte,
its loop's history and weights, and its ONNX outputs on fixed inputs within 1e-6, against ``golden/house``
(written by ``python -m tests.training.house_outputs tests/training/golden/house`` before the recipes
shared one loop, one ship step and one report; rewrite it only for a change that means to alter them)."""

from __future__ import annotations

import json
from pathlib import Path

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
        else:
            assert (out / name).read_text(encoding="utf-8") == (GOLDEN / name).read_text(encoding="utf-8"), name
