"""Serving an exported ModelScope-layout model is configuration only: tiny twins in the exact
RaNER and StructBERT layouts, exported to ONNX + INT8, served over HTTP by the same code."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.serve, pytest.mark.export]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from training.export.exporter import export_model
    from training.export.twin import build_twin

    root = tmp_path_factory.mktemp("exported")
    return {
        "ner": export_model("ner", build_twin("ner", "tiny", root / "raner-src", head_prefix=False), root / "ner").out,
        "sentiment": export_model("sentiment", build_twin("sentiment", "tiny", root / "sb-src"), root / "sent").out,
    }


def test_exported_twins_serve_over_http(zhserve_url: str, exported: dict[str, Path]) -> None:
    from tests.conftest import deploy_applications, wait_ready, zhserve_application

    twin = zhserve_application(
        name="twin",
        route_prefix="/twin",
        args={"ner_model": str(exported["ner"]), "sentiment_model": str(exported["sentiment"])},
    )
    deploy_applications(zhserve_application(), twin)
    try:
        url = f"{zhserve_url}/twin"
        wait_ready(url)
        models = {m["task"]: m for m in httpx.get(f"{url}/v1/models", timeout=30).json()["models"]}
        assert models["ner"]["tag_scheme"] == "BIOES" and models["ner"]["max_seq_length"] == 512
        assert models["ner"]["quantization"] == "int8-dynamic"
        assert models["ner"]["provenance"]["source"]  # where it came from is recorded

        text = "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。" * 30  # > 512 tokens: windows
        body = httpx.post(f"{url}/v1/analyze", json={"text": text}, timeout=120).json()
        # Random weights find arbitrary spans; what must hold is the contract.
        for entity in body["ner"]["entities"]:
            assert text[entity["start"] : entity["end"]] == entity["text"]
            assert entity["label"] in models["ner"]["entity_types"]
        assert body["sentiment"]["label"] in ("positive", "negative")
        assert body["ner"]["model"] == models["ner"]["model"]
        # The main application is untouched beside it.
        assert httpx.get(f"{zhserve_url}/v1/models", timeout=30).json()["models"][0]["name"] != models["ner"]["name"]
    finally:
        deploy_applications(zhserve_application())
