"""The other model tiers are configuration only: the e5 NER tier (models/ner-e5) and the CNN
sentiment tier (models/sentiment) served over HTTP by the same code as the defaults."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.serve

NEWS = "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。"


def test_the_e5_ner_tier_and_the_cnn_sentiment_tier_serve_over_http(zhserve_url: str) -> None:
    from tests.conftest import deploy_applications, wait_ready, zhserve_application

    ner_e5, cnn_sentiment = REPO_ROOT / "models" / "ner-e5", REPO_ROOT / "models" / "sentiment"
    if not (ner_e5 / "manifest.json").is_file():
        pytest.skip("models/ner-e5 is not in this checkout")
    tiers = zhserve_application(
        name="tiers",
        route_prefix="/tiers",
        args={"ner_model": str(ner_e5), "sentiment_model": str(cnn_sentiment)},
    )
    deploy_applications(zhserve_application(), tiers)
    try:
        url = f"{zhserve_url}/tiers"
        wait_ready(url)
        models = {m["task"]: m for m in httpx.get(f"{url}/v1/models", timeout=30).json()["models"]}
        assert models["ner"]["model"].startswith("zhserve-ner-e5@")
        assert models["sentiment"]["model"].startswith("zhserve-sentiment@")

        body = httpx.post(f"{url}/v1/analyze", json={"text": NEWS}, timeout=60).json()
        found = {(e["text"], e["label"]) for e in body["ner"]["entities"]}
        assert {("马云", "PER"), ("北京大学", "ORG"), ("李明", "PER")} <= found
        assert body["ner"]["model"] == models["ner"]["model"]

        # Whitespace the character tokenizer drops, and a document longer than one 126-character window:
        # offsets still index the text received.
        text = " \t" + "　".join([NEWS] * 12) + "\n"
        body = httpx.post(f"{url}/v1/ner", json={"text": text}, timeout=120).json()
        assert sum(e["text"] == "马云" for e in body["entities"]) == 12
        for entity in body["entities"]:
            assert text[entity["start"] : entity["end"]] == entity["text"]
    finally:
        deploy_applications(zhserve_application())
