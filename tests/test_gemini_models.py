"""Campaign generation on today's Gemini image models, through the real google-genai SDK against the local
server: the model table, sizes and aspect ratios in imageConfig, reference caps, variants, shut-down models,
the per-run budget, and batch mode with its sensor."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from dagster import build_sensor_context

from assets_pkg.domain.image_models import DEFAULT_GEMINI_IMAGE_MODEL, image_model
from conftest import ROOT, draw_drop, in_memory_instance, materialize_drop, metadata
from fake_gemini import FakeGemini

API_KEY = "test-key-not-a-secret-0123456789"

TWO_BRIEFS = """briefs:
  - id: red-hero
    prompt: A red product on a sunny beach
    query: a red circle
    top_k: 2
  - id: blue-banner
    prompt: Blue products on a tall banner
    query: a blue square
    aspect_ratio: "4:1"
    image_size: 2K
"""


@pytest.fixture
def gemini(monkeypatch):
    with FakeGemini() as server:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
        monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
        monkeypatch.setenv("GEMINI_CONCURRENCY", "1")  # scripted replies are consumed in request order
        yield server


def _by_prompt(requests) -> dict:
    return {r["body"]["contents"][0]["parts"][0]["text"]: r for r in requests}


def _failure(result) -> str:
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    return f"{failure.step_key}: {failure.step_failure_data.user_failure_data.description}"


def test_the_table_knows_todays_models():
    assert DEFAULT_GEMINI_IMAGE_MODEL == "gemini-3.1-flash-image"
    flash, pro, lite = (image_model(m) for m in ("gemini-3.1-flash-image", "gemini-3-pro-image",
                                                 "gemini-3.1-flash-lite-image"))
    assert (flash.max_references, pro.max_references, image_model("gemini-2.5-flash-image").max_references) == (14, 14, 3)
    assert (flash.sizes, pro.sizes, lite.sizes) == (("512", "1K", "2K", "4K"), ("1K", "2K", "4K"), ("1K",))
    assert {"1:4", "4:1", "1:8", "8:1"} <= set(flash.aspect_ratios) and "4:1" not in pro.aspect_ratios
    assert (flash.price("512", "interactive"), flash.price("4K", "interactive"), flash.price("1K", "batch")) == \
        (0.045, 0.151, 0.0335)
    assert (pro.price("2K", "interactive"), pro.price("4K", "batch"), lite.price("1K", "interactive")) == (0.134, 0.12, None)
    # GEMINI_MODELS overrides a field of a known model and adds new ones.
    custom = image_model("gemini-3.1-flash-image", '{"gemini-3.1-flash-image": {"price_per_image": {"1K": 0.08}}}')
    assert (custom.price("1K", "interactive"), custom.max_references) == (0.08, 14)


def test_default_model_size_aspect_ratio_and_fourteen_references_reach_the_api(studio, gemini, monkeypatch):
    briefs = TWO_BRIEFS.replace("top_k: 2", "top_k: 20")
    draw_drop(studio.drops / "spring", briefs=briefs)
    result = materialize_drop("spring")
    assert result.success, _failure(result)
    sent = _by_prompt(gemini.generate_requests)
    red, blue = sent["A red product on a sunny beach"], sent["Blue products on a tall banner"]
    assert red["path"] == "/v1beta/models/gemini-3.1-flash-image:generateContent"
    assert red["body"]["generationConfig"]["imageConfig"] == {"imageSize": "1K"}  # GEMINI_IMAGE_SIZE's default
    assert blue["body"]["generationConfig"]["imageConfig"] == {"aspectRatio": "4:1", "imageSize": "2K"}
    assert len([p for p in red["body"]["contents"][0]["parts"] if "inlineData" in p]) == 14  # of 20 references
    camp = metadata(result, "campaign_images")
    assert camp["estimated_cost_usd"] == pytest.approx(0.067 + 0.101)
    assert camp["estimated_cost_per_brief"] == {"red-hero": 0.067, "blue-banner": 0.101}
    sidecar = json.loads((studio.artifacts / "spring" / "campaign" / "blue-banner.json").read_text())
    assert (sidecar["mode"], sidecar["image_size"], sidecar["estimated_cost_usd"]) == ("interactive", "2K", 0.101)

    monkeypatch.setenv("GEMINI_IMAGE_SIZE", "512")  # a new default size is a new image: the cache key includes it
    assert materialize_drop("spring").success
    (again,) = gemini.generate_requests[2:]
    assert again["body"]["generationConfig"]["imageConfig"] == {"imageSize": "512"}


def test_variants_give_that_many_images_each_cached_and_stale_ones_removed(studio, gemini):
    brief_file = studio.drops / "spring" / "briefs.yaml"
    draw_drop(studio.drops / "spring", briefs=TWO_BRIEFS.replace("    top_k: 2\n", "    top_k: 2\n    variants: 3\n"))
    result = materialize_drop("spring")
    assert result.success
    campaign = studio.artifacts / "spring" / "campaign"
    assert sorted(p.name for p in campaign.glob("*.png")) == \
        ["blue-banner.png", "red-hero.png", "red-hero.v2.png", "red-hero.v3.png"]
    assert [json.loads((campaign / f"red-hero{s}.json").read_text())["variant"] for s in ("", ".v2", ".v3")] == [1, 2, 3]
    assert (len(gemini.generate_requests), metadata(result, "campaign_images")["generated"]) == (4, 4)
    assert materialize_drop("spring").success and len(gemini.generate_requests) == 4  # nothing billed twice

    brief_file.write_text(TWO_BRIEFS)  # back to one variant: the extra candidates go
    assert materialize_drop("spring").success and len(gemini.generate_requests) == 4
    assert sorted(p.name for p in campaign.glob("*")) == ["blue-banner.json", "blue-banner.png", "red-hero.json",
                                                          "red-hero.png"]


def test_a_brief_the_model_cannot_serve_fails_its_validation_in_one_line(studio, gemini, monkeypatch):
    monkeypatch.setenv("GEMINI_IMAGE_MODEL", "gemini-3-pro-image")
    draw_drop(studio.drops / "spring", briefs=TWO_BRIEFS)
    result = materialize_drop("spring")
    assert not result.success
    message = _failure(result)
    assert message.startswith("campaign_briefs: ") and "briefs.yaml: brief 'blue-banner': aspect_ratio '4:1' is not " \
        "offered by gemini-3-pro-image" in message and "\n" not in message
    (studio.drops / "spring" / "briefs.yaml").write_text(TWO_BRIEFS.replace("top_k: 2", "top_k: 2\n    image_size: '512'")
                                                       .replace('    aspect_ratio: "4:1"\n', ""))
    message = _failure(materialize_drop("spring"))
    assert "brief 'red-hero': image_size '512' is not offered by gemini-3-pro-image" in message
    assert gemini.requests == []


def test_a_shut_down_model_is_refused_before_any_request(studio, gemini):
    draw_drop(studio.drops / "spring", briefs=TWO_BRIEFS.replace('    aspect_ratio: "4:1"\n    image_size: 2K\n', ""))
    env = {"GEMINI_API_KEY": API_KEY, "GOOGLE_GEMINI_BASE_URL": gemini.url}
    proc = studio.cli("run", check=False, extra_env={**env, "GEMINI_IMAGE_MODEL": "gemini-2.5-flash-image"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "campaign_images: GEMINI_IMAGE_MODEL='gemini-2.5-flash-image': gemini-2.5-flash-image was shut down on " \
           "2026-10-02; use gemini-3.1-flash-image" in proc.stderr
    # A model of your own whose announced shutdown date has passed, declared through GEMINI_MODELS.
    models = json.dumps({"house-image-v1": {"shutdown": "2026-01-31", "replacement": "house-image-v2"}})
    proc = studio.cli("run", check=False, extra_env={**env, "GEMINI_IMAGE_MODEL": "house-image-v1",
                                                     "GEMINI_MODELS": models})
    assert "GEMINI_IMAGE_MODEL='house-image-v1': house-image-v1 was shut down on 2026-01-31; use house-image-v2" \
        in proc.stderr
    assert gemini.requests == []


def test_a_run_over_budget_generates_nothing_and_says_the_estimate_and_the_cap(studio, gemini, monkeypatch):
    draw_drop(studio.drops / "spring", briefs=TWO_BRIEFS)
    monkeypatch.setenv("GEMINI_MAX_COST_USD", "0.15")
    result = materialize_drop("spring")
    assert not result.success
    assert _failure(result) == "campaign_images: estimated $0.168 for 2 image(s) on gemini-3.1-flash-image " \
                               "(interactive) is over GEMINI_MAX_COST_USD=0.15; nothing was requested"
    assert gemini.requests == [] and not list((studio.artifacts / "spring" / "campaign").glob("*.png"))
    monkeypatch.setenv("GEMINI_MAX_COST_USD", "0.17")
    assert materialize_drop("spring").success and len(gemini.generate_requests) == 2
    # Unchanged briefs cost nothing, so the next run is within any cap.
    monkeypatch.setenv("GEMINI_MAX_COST_USD", "0")
    assert materialize_drop("spring").success and len(gemini.generate_requests) == 2


def _batch_sensor_requests(studio):
    from orchestration.definitions import build_resources
    from orchestration.sensors import campaign_batches

    resources = build_resources()
    context = build_sensor_context(instance=in_memory_instance(),  # the instance this test's runs went to
                                   resources={"library": resources["library"], "generator": resources["generator"]})
    return campaign_batches(context).run_requests


def test_batch_mode_submits_once_collects_after_the_sensor_sees_it_finish_and_records_refusals(studio, gemini,
                                                                                              monkeypatch):
    monkeypatch.setenv("GEMINI_MODE", "batch")
    draw_drop(studio.drops / "spring", briefs=TWO_BRIEFS)
    first = materialize_drop("spring")
    assert first.success, _failure(first)
    camp = metadata(first, "campaign_images")
    assert (camp["mode"], camp["pending"], camp["generated"], camp["batch_job"]) == ("batch", 2, 0, "batches/job1")
    assert camp["estimated_cost_usd"] == pytest.approx(0.0335 + 0.0505)  # half the interactive price
    (created,) = gemini.batch_creations
    assert created["path"] == "/v1beta/models/gemini-3.1-flash-image:batchGenerateContent"
    inlined = created["body"]["batch"]["inputConfig"]["requests"]["requests"]
    assert [r["request"]["generationConfig"]["imageConfig"] for r in inlined] == \
        [{"imageSize": "1K"}, {"aspectRatio": "4:1", "imageSize": "2K"}]
    assert gemini.generate_requests == []

    assert _batch_sensor_requests(studio) == []  # still pending: nothing to collect
    waiting = materialize_drop("spring")  # a run while the job is pending submits nothing again
    assert waiting.success and len(gemini.batch_creations) == 1 and metadata(waiting, "campaign_images")["pending"] == 2

    gemini.script = [{"candidates": [{"finishReason": "IMAGE_SAFETY"}]}]  # red-hero refused, blue-banner drawn
    gemini.finish_batches()
    (request,) = _batch_sensor_requests(studio)
    assert (request.partition_key, request.run_key) == ("spring", "batches/job1:collect")
    collected = materialize_drop("spring")
    camp = metadata(collected, "campaign_images")
    assert (camp["generated"], [(b["brief"], b["reason"]) for b in camp["blocked"]], camp["pending"]) == \
        (1, [("red-hero", "IMAGE_SAFETY")], 0)
    sidecar = json.loads((studio.artifacts / "spring" / "campaign" / "blue-banner.json").read_text())
    assert (sidecar["mode"], sidecar["estimated_cost_usd"], sidecar["model"]) == ("batch", 0.0505, "gemini-3.1-flash-image")
    assert not (studio.artifacts / "spring" / "campaign-batch.json").exists()

    again = materialize_drop("spring")  # the image is kept, the refusal is not asked again
    assert again.success and len(gemini.batch_creations) == 1 and gemini.generate_requests == []
    assert _batch_sensor_requests(studio) == []


@pytest.mark.slow
def test_a_run_killed_after_submitting_a_batch_never_submits_it_again(studio, gemini):
    draw_drop(studio.drops / "spring", briefs=TWO_BRIEFS)
    env = {**os.environ, **studio.env, "GEMINI_API_KEY": API_KEY, "GOOGLE_GEMINI_BASE_URL": gemini.url,
           "GEMINI_MODE": "batch"}
    gemini.batch_create_delay = 30  # the job exists on the server; the client is killed before it hears back
    proc = subprocess.Popen([sys.executable, "-m", "assets_pkg.cli", "run"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not gemini.batch_creations:
        assert proc.poll() is None and time.time() < deadline, "the run never submitted its batch"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    record = json.loads((studio.artifacts / "spring" / "campaign-batch.json").read_text())
    assert record["job"] is None  # it died before it could record the job's name

    gemini.batch_create_delay = 0
    (summary,) = studio.run_json(extra_env={"GEMINI_API_KEY": API_KEY, "GOOGLE_GEMINI_BASE_URL": gemini.url,
                                            "GEMINI_MODE": "batch"})
    assert summary["ok"], summary
    assert len(gemini.batch_creations) == 1  # found by its display name, not submitted again
    record = json.loads((studio.artifacts / "spring" / "campaign-batch.json").read_text())
    assert record["job"] == "batches/job1"
    gemini.finish_batches()
    (summary,) = studio.run_json(extra_env={"GEMINI_API_KEY": API_KEY, "GOOGLE_GEMINI_BASE_URL": gemini.url,
                                            "GEMINI_MODE": "batch"})
    assert [p.rsplit("/", 1)[-1] for p in summary["generated"]] == ["blue-banner.png", "red-hero.png"]
    assert len(gemini.batch_creations) == 1 and gemini.generate_requests == []
    assert API_KEY not in json.dumps(record) and base64.b64encode(API_KEY.encode()).decode() not in json.dumps(record)


def test_a_batch_over_the_inline_limit_is_refused_before_submitting(studio, gemini, monkeypatch):
    from assets_pkg.stages.campaigns import generator

    monkeypatch.setenv("GEMINI_MODE", "batch")
    monkeypatch.setattr(generator, "BATCH_INLINE_LIMIT", 2_000)  # the real limit is 20 MB; these pictures are tiny
    draw_drop(studio.drops / "spring", briefs=TWO_BRIEFS)
    result = materialize_drop("spring")
    assert not result.success
    message = _failure(result)
    assert message.startswith("campaign_images: GEMINI_MODE=batch: 2 image request(s) with their references are about")
    assert "Nothing was submitted" in message and "\n" not in message
    assert gemini.requests == [] and not (studio.artifacts / "spring" / "campaign-batch.json").exists()
