from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from training.export.twin import build_twin


@pytest.fixture(scope="session")
def twins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny twins in both layouts, plus the RaNER variant whose head keys lack ``head.``."""
    root = tmp_path_factory.mktemp("twins")
    return {
        "ner": build_twin("ner", "tiny", root / "ner"),
        "ner-no-head-prefix": build_twin("ner", "tiny", root / "ner-flat", head_prefix=False, seed=1),
        "sentiment": build_twin("sentiment", "tiny", root / "sentiment"),
    }
