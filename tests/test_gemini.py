"""Campaign images through the real google-genai SDK against a local Gemini-compatible server."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from conftest import BRIEFS, draw_drop, materialize_drop, metadata
from fake_gemini import FakeGemini, png_bytes

API_KEY = "test-key-not-a-secret-0123456789"


@pytest.fixture
def gemini(monkeypatch):
    with FakeGemini() as server:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
        monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
        yield server


def test_campaign_images_come_from_gemini_with_prompt_and_references(studio, gemini, monkeypatch):
    monkeypatch.setenv("GEMINI_IMAGE_MODEL", "gemini-test-image")
    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    result = materialize_drop("spring")
    assert result.success
    camp = metadata(result, "campaign_images")
    assert (camp["generator"], camp["model"], camp["generated"]) == ("gemini", "gemini-test-image", 2)
    assert camp["usage"]["total_token_count"] == 2 * 2590

    by_prompt = {r["body"]["contents"][0]["parts"][0]["text"]: r for r in gemini.requests}
    red = by_prompt["A red product on a sunny beach"]
    assert red["path"] == "/v1beta/models/gemini-test-image:generateContent"
    assert red["headers"]["x-goog-api-key"] == API_KEY
    images = [p["inlineData"] for p in red["body"]["contents"][0]["parts"][1:]]
    assert len(images) == 2  # red-hero has top_k 2
    for inline in images:
        data = inline["data"]  # the SDK sends URL-safe base64 without padding
        with Image.open(io.BytesIO(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))) as im:
            assert im.getpixel((im.width // 2, im.height // 2))[0] > 150  # a red circle's middle
    blue = by_prompt["Blue products on a shelf"]
    assert blue["body"]["generationConfig"]["imageConfig"]["aspectRatio"] == "16:9"

    png = studio.artifacts / "spring" / "campaign" / "red-hero.png"
    with Image.open(png) as im:
        assert im.getpixel((0, 0)) == (255, 0, 255)  # the server's picture, re-encoded as PNG
    sidecar = png.with_suffix(".json").read_text()
    assert json.loads(sidecar)["model"] == "gemini-test-image"
    assert API_KEY not in sidecar
    assert all(API_KEY not in str(v) for v in camp.values())


def test_text_only_reply_is_recorded_as_blocked_and_other_briefs_go_on(studio, gemini):
    gemini.script = [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "I can't draw that."}]},
                         "finishReason": "STOP"}]},
    ]
    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    result = materialize_drop("spring")
    assert result.success
    camp = metadata(result, "campaign_images")
    assert camp["generated"] == 1
    assert [(b["reason"], b["text"]) for b in camp["blocked"]] == [("NO_IMAGE", "I can't draw that.")]


def test_unchanged_briefs_are_not_generated_again_and_force_regenerates(studio, gemini):
    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    assert materialize_drop("spring").success
    assert len(gemini.requests) == 2
    again = materialize_drop("spring")
    assert again.success and len(gemini.requests) == 2  # nothing billed twice
    assert metadata(again, "campaign_images")["cached"] == 2

    brief_file = studio.drops / "spring" / "briefs.yaml"
    brief_file.write_text(brief_file.read_text().replace("A red product on a sunny beach", "A red product at night"))
    assert materialize_drop("spring").success
    assert [r["body"]["contents"][0]["parts"][0]["text"] for r in gemini.requests[2:]] == ["A red product at night"]

    forced = materialize_drop("spring", run_config={"ops": {"campaign_images": {"config": {"force": True}}}})
    assert forced.success and len(gemini.requests) == 5
