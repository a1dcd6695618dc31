"""The NER ensemble (training/ner_ensemble.py) built from the shipped e5 and CNN tiers: one graph and one CRF
that are exactly the weighted sum of the two taggers', served by the runtime unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deployments.runtime.crf import CrfParams
from deployments.runtime.model_dir import ModelDir
from deployments.runtime.ner import NerModel
from tests.training.test_shipped_models import NEWS, model_dir
from training.ner_ensemble import build

CJK = "马云在杭州会见了北京大学的李明教授"  # characters only: the CNN's own tokens are these characters
MIXED = ["  Ｎ Ｂ Ａ球星姚明\t回到上海。", "2024年3月，Apple在北京发布iPhone。", "我在\u200b北京天安门"]


@pytest.fixture(scope="module")
def members() -> tuple[Path, Path]:
    return model_dir("ner-e5"), model_dir("ner")


@pytest.fixture(scope="module")
def ensembles(members: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[float, Path]:
    root = tmp_path_factory.mktemp("ensembles")
    e5, cnn = members
    return {w: _built(e5, cnn, root / f"w{w:g}", w) for w in (0.0, 0.5, 1.0)}


def _built(e5: Path, cnn: Path, out: Path, weight: float) -> Path:
    build(e5, cnn, out, weight=weight, version="0.0.1", log=lambda _: None)
    return out


def _emissions(model: NerModel, text: str) -> np.ndarray:
    (tokens,) = model.tokenizer.encode([text])
    emissions = model.emissions([tokens.ids])
    row = emissions[0] if isinstance(emissions, list) else emissions[:1]
    return np.asarray(row[0, : len(tokens.ids) + 2], dtype=np.float64)


def test_weight_one_is_the_e5_tier_and_weight_zero_the_cnn(
    members: tuple[Path, Path], ensembles: dict[float, Path]
) -> None:
    e5, cnn = (NerModel.from_model_dir(path) for path in members)
    only_e5, only_cnn = NerModel.from_model_dir(ensembles[1.0]), NerModel.from_model_dir(ensembles[0.0])
    for text in [NEWS, *MIXED]:
        np.testing.assert_allclose(_emissions(only_e5, text), _emissions(e5, text), atol=1e-5)
    # On characters alone the CNN's own WordPiece ids are the ids the map gives it: the same emissions.
    (own,) = cnn.tokenizer.encode([CJK])
    assert len(own.ids) == len(CJK)
    np.testing.assert_allclose(_emissions(only_cnn, CJK), _emissions(cnn, CJK), atol=1e-5)


def test_the_ensemble_is_the_weighted_sum_of_both_scores(
    members: tuple[Path, Path], ensembles: dict[float, Path]
) -> None:
    half, only_e5, only_cnn = (NerModel.from_model_dir(ensembles[w]) for w in (0.5, 1.0, 0.0))
    for text in [NEWS, *MIXED]:
        expected = 0.5 * _emissions(only_e5, text) + 0.5 * _emissions(only_cnn, text)
        np.testing.assert_allclose(_emissions(half, text), expected, atol=1e-4)
    crfs = [CrfParams.load(ModelDir.load(path).file("crf.npz")) for path in (ensembles[0.5], *members)]
    for name in ("start_transitions", "end_transitions", "transitions"):
        np.testing.assert_allclose(
            getattr(crfs[0], name), 0.5 * getattr(crfs[1], name) + 0.5 * getattr(crfs[2], name), rtol=1e-6
        )
    manifest = ModelDir.load(ensembles[0.5]).manifest
    assert [m["name"] for m in manifest.provenance["members"]] == ["zhserve-ner-e5", "zhserve-ner"]
    assert manifest.max_seq_length == 128 and manifest.quantization == "int8-dynamic"


def test_the_ensemble_finds_entities_with_exact_offsets(ensembles: dict[float, Path]) -> None:
    model = NerModel.from_model_dir(ensembles[0.5], row_threads=2)
    texts = [NEWS, *MIXED]
    results = model.predict(texts)
    # 杭州阿里巴巴总部 is left out: the members read it by two conventions (one ORG; 杭州 LOC + 阿里巴巴 ORG)
    assert {("马云", "PER"), ("北京大学", "ORG"), ("李明", "PER")} <= {(e.text, e.label) for e in results[0]}
    assert {("姚明", "PER"), ("上海", "LOC")} <= {(e.text, e.label) for e in results[1]}
    for text, entities in zip(texts, results, strict=True):
        assert all(text[e.start : e.end] == e.text and 0 < e.score <= 1 for e in entities)


def test_members_of_the_wrong_kind_are_refused(members: tuple[Path, Path], tmp_path: Path) -> None:
    e5, cnn = members
    with pytest.raises(ValueError, match="first member"):
        build(cnn, e5, tmp_path / "swapped", weight=0.5, version="0.0.1", log=lambda _: None)
    assert not (tmp_path / "swapped").exists()
