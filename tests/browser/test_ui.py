"""The web UI in a real browser against the real service and its embedded models.

The DOM contract under test: the input is a <textarea> (Ctrl+Enter runs the analysis); each
highlighted entity is a <mark> with data-label, data-start and data-end (code-point offsets); the
final sentiment verdict is the element with data-sentiment; <main> carries data-state
(idle/loading/streaming/done/error).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.browser.conftest import screenshot, screenshot_path

pytestmark = [pytest.mark.browser, pytest.mark.serve]

NEWS = "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。"
# Astral characters (emoji and a CJK Extension B character) before and between the entities, so
# code-point offsets and UTF-16 indices differ by several positions.
# A person, a place and an organisation, each on its own (the default NER model reads NEWS's
# 杭州阿里巴巴总部 as one ORG, the MSRA corpus's convention)
THREE_LABELS = "2024年3月，马云在杭州会见了来自北京大学的李明教授。"
EMOJI_TEXT = "🎉🎉😍 好消息！𠮷野家的老板马云昨天在杭州宣布🚀，阿里巴巴将与北京大学合作👏。"
MARKS_JS = """els => els.map(e => ({
    label: e.dataset.label, start: Number(e.dataset.start), end: Number(e.dataset.end), text: e.textContent
}))"""
DONE = "#app[data-state=done]"
LONG_TIMEOUT_MS = 180_000


def api_analyze(url: str, text: str) -> dict[str, Any]:
    response = httpx.post(f"{url}/v1/analyze", json={"text": text}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def entity_tuples(entities: list[dict[str, Any]]) -> list[tuple[str, int, int, str]]:
    return [(e["label"], e["start"], e["end"], e["text"]) for e in entities]


def marks(page: Any) -> list[tuple[str, int, int, str]]:
    found = page.eval_on_selector_all("#output mark", MARKS_JS)
    return [(m["label"], m["start"], m["end"], m["text"]) for m in found]


def open_ui(page: Any) -> None:
    page.goto("/")
    page.wait_for_selector("#service-status[data-status=online]")


def analyze_with_keyboard(page: Any, text: str, *, timeout_ms: float = 60_000) -> None:
    page.fill("textarea#input", text)
    page.focus("textarea#input")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(DONE, timeout=timeout_ms)


def assert_clean(page: Any) -> None:
    record = page.record
    assert record.blocked == [], f"the page tried to reach other hosts: {record.blocked}"
    assert record.page_errors == [], record.page_errors
    assert record.console_errors == [], record.console_errors


def test_page_loads_offline_and_names_the_models(page: Any, zhserve_url: str) -> None:
    open_ui(page)
    models = httpx.get(f"{zhserve_url}/v1/models", timeout=30).json()["models"]
    names = {model["task"]: model["model"] for model in models}
    assert page.inner_text("#ner-model") == names["ner"]
    assert page.inner_text("#sentiment-model") == names["sentiment"]
    legend = page.eval_on_selector_all("#legend button", "els => els.map(e => e.dataset.label)")
    assert set(legend) >= {"PER", "LOC", "ORG"}
    assert page.locator("textarea#input").count() == 1
    screenshot(page, "desktop-initial")
    assert_clean(page)


# WCAG 2.x AA contrast of every visible text (tests/browser/contrast.js).
CONTRAST_JS = (Path(__file__).parent / "contrast.js").read_text(encoding="utf-8")


def assert_wcag_aa_contrast(page: Any) -> None:
    result = page.evaluate(CONTRAST_JS)
    assert result["checked"] > 20
    assert result["failures"] == []


def test_text_meets_wcag_aa_contrast_before_and_after_an_analysis(page: Any) -> None:
    open_ui(page)
    assert_wcag_aa_contrast(page)
    analyze_with_keyboard(page, NEWS)
    assert page.locator("#output mark").count() >= 3
    assert_wcag_aa_contrast(page)
    page.fill("textarea#input", "   ")
    page.click("#analyze")
    page.wait_for_selector("#app[data-state=error]")
    assert_wcag_aa_contrast(page)


def test_analyze_marks_entities_with_api_labels_and_offsets(page: Any, zhserve_url: str) -> None:
    expected = api_analyze(zhserve_url, THREE_LABELS)
    open_ui(page)
    page.fill("textarea#input", THREE_LABELS)
    page.click("#analyze")
    page.wait_for_selector(DONE)

    found = marks(page)
    assert found == entity_tuples(expected["ner"]["entities"])
    assert {label for label, *_ in found} == {"PER", "LOC", "ORG"}
    assert ("PER", 8, 10, "马云") in found and ("LOC", 11, 13, "杭州") in found
    for _, start, end, text in found:
        assert THREE_LABELS[start:end] == text
    verdict = page.locator("[data-sentiment]")
    assert verdict.count() == 1
    assert verdict.get_attribute("data-sentiment") == expected["sentiment"]["label"]
    assert "%" in page.inner_text(".gauge-value")
    assert "ms" in page.inner_text("#latency") or " s" in page.inner_text("#latency")
    assert page.inner_text("#ner-model") == expected["ner"]["model"]
    assert page.locator("#entity-table tbody tr").count() == len(found)
    assert page.record.api_calls == ["/v1/analyze"]

    page.click("#copy-json")
    page.wait_for_selector("#copy-status:has-text('JSON')")
    copied = json.loads(page.evaluate("navigator.clipboard.readText()"))
    assert entity_tuples(copied["ner"]["entities"]) == found
    assert copied["sentiment"]["label"] == expected["sentiment"]["label"]
    screenshot(page, "desktop-news")
    assert_clean(page)


def test_ctrl_enter_runs_the_analysis_and_sentiment_follows_the_text(page: Any, zhserve_url: str) -> None:
    open_ui(page)
    analyze_with_keyboard(page, "这家餐厅太难吃了，服务也很差，再也不来了。")
    assert page.get_attribute("[data-sentiment]", "data-sentiment") == "negative"
    analyze_with_keyboard(page, "服务很贴心，菜也好吃，下次还来！")
    assert page.get_attribute("[data-sentiment]", "data-sentiment") == "positive"
    assert page.record.api_calls == ["/v1/analyze", "/v1/analyze"]
    assert_clean(page)


def test_table_row_scrolls_to_and_flashes_its_mark_and_legend_toggles_types(page: Any) -> None:
    open_ui(page)
    page.click("[data-example=news]")
    analyze_with_keyboard(page, page.input_value("textarea#input"))
    rows = page.locator("#entity-table tbody tr")
    assert rows.count() > 0
    last = rows.nth(rows.count() - 1)
    start, end = last.get_attribute("data-start"), last.get_attribute("data-end")
    last.locator("button.jump").focus()
    page.keyboard.press("Enter")  # keyboard path: the row's button
    target = page.locator(f"#output mark[data-start='{start}'][data-end='{end}']")
    page.wait_for_function("el => el.classList.contains('flash')", arg=target.element_handle())
    assert target.is_visible()

    label = last.get_attribute("data-label")
    toggle = page.locator(f"#legend button[data-label='{label}']")
    assert toggle.get_attribute("aria-pressed") == "true"
    toggle.click()
    assert toggle.get_attribute("aria-pressed") == "false"
    hidden = page.eval_on_selector_all(
        f"#output mark[data-label='{label}']", "els => els.every(e => e.classList.contains('off'))"
    )
    assert hidden
    toggle.click()
    assert page.locator(f"#output mark[data-label='{label}'].off").count() == 0
    assert_clean(page)


def test_long_text_streams_progressively_and_completes(page: Any, zhserve_url: str) -> None:
    open_ui(page)
    page.click("[data-example=long]")
    # Six copies of the long example: enough windows that the stream is seen in progress even
    # though windows travel to the models in groups.
    text = "\n".join([page.input_value("textarea#input")] * 6)
    page.fill("textarea#input", text)
    assert len(text) > 18_000
    # Record the progress and the number of marks each time either changes while the stream runs.
    page.evaluate(
        """() => {
        window.__seen = [];
        const bar = document.querySelector('#progress .progress-track');
        const observer = new MutationObserver(() => window.__seen.push({
            progress: Number(bar.getAttribute('aria-valuenow')),
            marks: document.querySelectorAll('#output mark').length,
            state: document.querySelector('#app').dataset.state,
        }));
        observer.observe(bar, {attributes: true});
        observer.observe(document.querySelector('#output'), {childList: true});
    }"""
    )
    screenshot_path("desktop-long-streaming").unlink(missing_ok=True)
    page.click("#analyze")
    try:  # a picture mid-stream when the machine is slow enough to catch one; never a failure
        page.wait_for_function("() => window.__seen.some(s => s.progress > 0 && s.progress < 100)", timeout=20_000)
        page.screenshot(path=str(screenshot_path("desktop-long-streaming")))
    except PlaywrightTimeoutError:
        pass
    page.wait_for_selector(DONE, timeout=LONG_TIMEOUT_MS)

    seen = page.evaluate("window.__seen")
    partial = [s for s in seen if 0 < s["progress"] < 100]
    assert partial and all(s["state"] == "streaming" for s in partial)
    assert any(s["marks"] > 0 for s in partial), "entities should appear before the stream ends"
    assert seen[-1]["progress"] == 100
    assert page.record.api_calls == ["/v1/analyze/stream"]
    assert "complete" in page.inner_text("#progress .progress-text")

    expected = api_analyze(zhserve_url, text)
    assert marks(page) == entity_tuples(expected["ner"]["entities"])
    assert page.get_attribute("[data-sentiment]", "data-sentiment") == expected["sentiment"]["label"]
    sentences = expected["sentiment"]["sentences"]
    assert len(sentences) > 1
    assert page.locator("#strip .strip-bar .seg").count() == len(sentences)
    assert page.locator("#gutter .bar").count() > 1
    # Hundreds of sentences still fit the strip: the page never scrolls sideways.
    assert len(sentences) > 300
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    strip_box, panel_box = page.locator("#strip .strip-bar").bounding_box(), page.locator("#strip").bounding_box()
    assert strip_box["x"] + strip_box["width"] <= panel_box["x"] + panel_box["width"] + 1
    assert page.locator("#output .pending").count() == 0
    screenshot(page, "desktop-long-done")
    assert_clean(page)


def test_emoji_and_supplementary_characters_highlight_the_right_characters(page: Any, zhserve_url: str) -> None:
    expected = entity_tuples(api_analyze(zhserve_url, EMOJI_TEXT)["ner"]["entities"])
    # The check only means something if an entity sits after astral characters.
    astral_before = [start for _, start, _, _ in expected if any(ord(c) > 0xFFFF for c in EMOJI_TEXT[:start])]
    assert astral_before, f"no entity after an astral character: {expected}"
    open_ui(page)
    analyze_with_keyboard(page, EMOJI_TEXT)
    found = marks(page)
    assert found == expected
    for _, start, end, text in found:
        assert EMOJI_TEXT[start:end] == text
    # The rendered text is the input, character for character, with nothing lost or doubled.
    assert page.eval_on_selector("#output", "e => e.textContent") == EMOJI_TEXT
    screenshot(page, "desktop-emoji")
    assert_clean(page)


def test_empty_input_shows_an_error_without_calling_the_api(page: Any) -> None:
    open_ui(page)
    page.fill("textarea#input", "  \n\t ")
    page.focus("textarea#input")
    page.keyboard.press("Control+Enter")
    error = page.locator("#error[role=alert]")
    error.wait_for(state="visible")
    assert "empty" in error.inner_text().lower()
    assert page.get_attribute("textarea#input", "aria-invalid") == "true"
    assert page.get_attribute("#app", "data-state") == "error"
    assert page.record.api_calls == []
    screenshot(page, "desktop-empty-input")
    page.fill("textarea#input", NEWS)  # typing clears the message
    error.wait_for(state="hidden")
    assert_clean(page)


def test_api_error_message_is_shown_from_the_error_body(page: Any, zhserve_url: str) -> None:
    too_long = "很" * 200_001
    body = httpx.post(f"{zhserve_url}/v1/analyze/stream", json={"text": too_long}, timeout=60)
    assert body.status_code == 413
    message = body.json()["error"]["message"]
    open_ui(page)
    page.evaluate("text => { document.querySelector('#input').value = text; }", too_long)
    page.click("#analyze")
    page.wait_for_selector("#app[data-state=error]")
    shown = page.inner_text("#error")
    assert message in shown
    assert "413" in shown and "payload_too_large" in shown
    page.record.console_errors.clear()  # Chromium logs the failed request itself
    assert_clean(page)


def test_phone_width_layout_has_no_horizontal_overflow(phone_page: Any) -> None:
    page = phone_page
    open_ui(page)
    page.click("[data-example=emoji]")
    analyze_with_keyboard(page, page.input_value("textarea#input"))
    assert page.locator("#output mark").count() > 0
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"page is {overflow}px wider than the 375px viewport"
    screenshot(page, "phone-emoji")
    page.click("[data-example=review]")
    analyze_with_keyboard(page, page.input_value("textarea#input"))
    screenshot(page, "phone-review")
    assert_clean(page)


def test_ui_asks_for_the_api_key_on_401_and_keeps_it_in_session_storage_only(
    page: Any, zhserve_url: str, tmp_path: Path
) -> None:
    """An API key switched on live: the page asks for it, says when one was refused, keeps the
    accepted one in sessionStorage (never localStorage or a cookie) and sends it as a Bearer token."""
    from tests.conftest import deploy_applications, wait_ready, zhserve_application

    key_file = tmp_path / "api-key"
    key_file.write_text("open-sesame\n", encoding="utf-8")
    deploy_applications(zhserve_application(user_config={"Ingress": {"api_key_file": str(key_file)}}))
    try:
        deadline = 60
        while httpx.get(f"{zhserve_url}/v1/models", timeout=30).status_code != 401 and deadline:
            deadline -= 1
            page.wait_for_timeout(500)
        page.goto("/")
        dialog = page.locator("#key-dialog")
        dialog.wait_for(state="visible")
        page.fill("#key-input", "wrong-key")
        page.click("#key-submit")
        page.wait_for_selector("#key-reason:has-text('not accepted')")
        assert dialog.is_visible()
        screenshot(page, "desktop-api-key")
        page.fill("#key-input", "open-sesame")
        page.keyboard.press("Enter")
        page.wait_for_selector("#service-status[data-status=online]")
        assert not dialog.is_visible()

        analyze_with_keyboard(page, NEWS)
        assert ("PER", 8, 10, "马云") in marks(page)
        assert page.evaluate("sessionStorage.getItem('zhserve.apiKey')") == "open-sesame"
        assert page.evaluate("localStorage.length") == 0
        assert page.context.cookies() == []
        sent = page.evaluate(
            "fetch('/v1/models', {headers: {Authorization: 'Bearer ' + sessionStorage.getItem('zhserve.apiKey')}})"
            ".then(r => r.status)"
        )
        assert sent == 200

        # Another tab of a fresh session knows nothing of the key.
        other = page.context.browser.new_context(base_url=zhserve_url)
        try:
            fresh = other.new_page()
            fresh.goto("/")
            fresh.locator("#key-dialog").wait_for(state="visible")
            fresh.click("#key-cancel")
            fresh.wait_for_selector("#service-status[data-status=offline]")
        finally:
            other.close()
        record = page.record
        record.console_errors = [e for e in record.console_errors if "401" not in e]
        assert_clean(page)
    finally:
        deploy_applications(zhserve_application())
        wait_ready(zhserve_url)
        for _ in range(120):  # the open default is back before the next test
            if httpx.get(f"{zhserve_url}/v1/models", timeout=30).status_code == 200:
                break
            page.wait_for_timeout(500)
