"""Campaign images through the real google-genai SDK against a local Gemini-compatible server."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from conftest import BRIEFS, draw_drop, materialize_drop, metadata
from fake_gemini import FakeGemini

API_KEY = "test-key-not-a-secret-0123456789"


@pytest.fixture
def gemini(monkeypatch):
    with FakeGemini() as server:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
        monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
        yield server


def test_campaign_images_come_from_gemini_with_prompt_and_references(studio, gemini, monkeypatch):
    monkeypatch.setenv("GEMINI_IMAGE_MODEL", "gemini-test-image")
    from dagster import DagsterInstance

    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    result = materialize_drop("spring", instance=DagsterInstance.get())  # what the instance records is checked
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
    assert all(API_KEY not in (e.message or "") for e in result.all_events)  # Dagster's logs of the run
    run = DagsterInstance.get().get_run_by_id(result.run_id)
    assert API_KEY not in json.dumps(run.run_config, default=str) and API_KEY not in json.dumps(run.tags)


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
    sheet = studio.artifacts / "spring" / "sheets" / "campaign.jpg"
    drawn = sheet.stat().st_mtime_ns
    again = materialize_drop("spring")
    assert again.success and len(gemini.requests) == 2  # nothing billed twice
    assert metadata(again, "campaign_images")["cached"] == 2
    assert sheet.stat().st_mtime_ns == drawn  # nor its contact sheet drawn again
    assert "data:image/jpeg;base64," in metadata(again, "campaign_images")["contact_sheet"]

    brief_file = studio.drops / "spring" / "briefs.yaml"
    brief_file.write_text(brief_file.read_text().replace("A red product on a sunny beach", "A red product at night"))
    assert materialize_drop("spring").success
    assert [r["body"]["contents"][0]["parts"][0]["text"] for r in gemini.requests[2:]] == ["A red product at night"]
    assert sheet.stat().st_mtime_ns > drawn  # a new image: the sheet shows it

    forced = materialize_drop("spring", run_config={"ops": {"campaign_images": {"config": {"force": True}}}})
    assert forced.success and len(gemini.requests) == 5


ONE_BRIEF = """briefs:
  - id: red-hero
    prompt: A red product on a sunny beach
    query: a red circle
    top_k: 2
"""


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setenv("GEMINI_RETRY_INITIAL_DELAY_MS", "50")
    monkeypatch.setenv("GEMINI_CONCURRENCY", "1")  # scripted replies are consumed in request order


def test_429_then_success_is_retried_by_the_sdk(studio, gemini, fast_retries):
    gemini.script = [429]
    draw_drop(studio.drops / "spring", briefs=ONE_BRIEF)
    result = materialize_drop("spring")
    assert result.success
    assert len(gemini.requests) == 2
    camp = metadata(result, "campaign_images")
    assert (camp["generated"], camp["blocked"]) == (1, [])
    assert camp["estimated_cost_usd"] == pytest.approx(0.067)  # one 1K image of gemini-3.1-flash-image


def test_persistent_500_is_bounded_recorded_and_retried_next_run(studio, gemini, fast_retries, monkeypatch):
    monkeypatch.setenv("GEMINI_ATTEMPTS", "3")
    gemini.script = [500, 500, 500]  # every attempt of the first brief
    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    result = materialize_drop("spring")
    assert result.success  # one brief still produced an image
    camp = metadata(result, "campaign_images")
    assert [b["reason"] for b in camp["blocked"]] == ["HTTP_500"]
    assert len(gemini.requests) == 3 + 1
    again = materialize_drop("spring")  # a transient failure is asked again, the good image is kept
    assert metadata(again, "campaign_images")["blocked"] == [] and len(gemini.requests) == 5


def test_safety_block_is_recorded_and_not_billed_again(studio, gemini, fast_retries):
    gemini.script = [{"candidates": [{"finishReason": "IMAGE_SAFETY"}],
                      "usageMetadata": {"promptTokenCount": 1000, "totalTokenCount": 1000}}]
    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    result = materialize_drop("spring")
    assert result.success
    assert [b["reason"] for b in metadata(result, "campaign_images")["blocked"]] == ["IMAGE_SAFETY"]
    again = materialize_drop("spring")
    assert len(gemini.requests) == 2  # neither the image nor the refusal was asked for again
    assert [b["reason"] for b in metadata(again, "campaign_images")["blocked"]] == ["IMAGE_SAFETY"]


def test_slow_reply_past_the_timeout_is_recorded_and_every_brief_failing_fails_the_run(studio, gemini, fast_retries,
                                                                                     monkeypatch):
    monkeypatch.setenv("GEMINI_TIMEOUT_S", "1")
    monkeypatch.setenv("GEMINI_ATTEMPTS", "1")
    from fake_gemini import image_reply

    gemini.script = [("sleep", 3, image_reply())]
    draw_drop(studio.drops / "spring", briefs=ONE_BRIEF)
    result = materialize_drop("spring")
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "campaign_images"
    assert "no brief produced an image: red-hero (TIMEOUT)" in failure.step_failure_data.user_failure_data.description


def test_unknown_model_is_one_clear_error_naming_the_setting(studio, gemini):
    gemini.script = [404]
    draw_drop(studio.drops / "spring", briefs=ONE_BRIEF)
    proc = studio.cli("run", check=False, extra_env={"GEMINI_API_KEY": API_KEY, "GOOGLE_GEMINI_BASE_URL": gemini.url,
                                                     "GEMINI_IMAGE_MODEL": "gemini-nope"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "campaign_images: GEMINI_IMAGE_MODEL='gemini-nope': model not found" in proc.stderr
    assert API_KEY not in proc.stderr + proc.stdout


def test_references_are_capped_resized_and_oriented(studio, gemini, monkeypatch, tmp_path):
    from assets_pkg.stages.campaigns.generator import prepare_reference

    big = tmp_path / "big.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (3000, 2000), "red").save(big, exif=exif)
    assert prepare_reference(big).size == (683, 1024)  # rotated to portrait, long side 1024

    monkeypatch.setenv("GEMINI_MAX_REFERENCE_IMAGES", "1")
    draw_drop(studio.drops / "spring", briefs=ONE_BRIEF)
    assert materialize_drop("spring").success
    parts = gemini.requests[0]["body"]["contents"][0]["parts"]
    assert len([p for p in parts if "inlineData" in p]) == 1
