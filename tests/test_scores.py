"""Candidates checked before a person looks: each campaign image scored by the serving CLIP model (the repo's
tiny checkpoint, real weights) against the product pictures it was made from and against the drop's prompts,
flagged by the drop's own rules, and kept from publishing when PUBLISH_REQUIRES_SCORES says so. The images
come from the real google-genai SDK against the local Gemini server."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from conftest import draw_drop, materialize_drop, metadata, in_memory_instance
from fake_gemini import FakeGemini, image_reply

API_KEY = "test-key-not-a-secret-0123456789"
BRIEFS = """briefs:
  - id: red-hero
    prompt: a red circle
    products: [DOT-7]
  - id: blue-shelf
    prompt: a blue square
    query: a blue square
    top_k: 2
"""
PRODUCTS = """file,sku,name,category,color
red_circle_0.png,DOT-7,Red dot pin,Pins,Red
blue_square_0.png,SQ-2,Blue square badge,Badges,Blue
"""


def _scores(studio) -> dict:
    [found] = list((studio.artifacts / "spring").rglob("scores.json"))
    return json.loads(found.read_text())


def _campaign_rows(studio, collection: str, where: str = "") -> dict[str, tuple]:
    """path -> (fidelity, prompt_match, flagged) of the drop's rows in its campaign collection, as stored."""
    from assets_pkg.domain.milvus import campaign_uri
    from assets_pkg.domain.store import ImageCollection, drop_filter

    with ImageCollection(campaign_uri(studio.env["DROP_STUDIO_MILVUS_URI"]), None, collection) as store:
        found = store.client.query(collection, filter=" and ".join(filter(None, [drop_filter("spring"), where])),
                                   output_fields=["path", "fidelity", "prompt_match", "flagged"])
    return {r["path"]: (round(r["fidelity"], 4), round(r["prompt_match"], 4), r["flagged"]) for r in found}


def _check(result, name: str):
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def _grey() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (512, 512), (128, 128, 128)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def made(studio, monkeypatch):
    """blue-shelf answered with its own product picture's bytes, red-hero with a plain grey image."""
    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    (studio.drops / "spring" / "products.csv").write_text(PRODUCTS)
    gemini = FakeGemini().__enter__()
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", gemini.url)
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    blue = (studio.drops / "spring" / "blue_square_0.png").read_bytes()
    gemini.reply = lambda body: image_reply(blue if "a blue square" in json.dumps(body) else _grey())
    result = materialize_drop("spring")
    yield result, gemini
    gemini.__exit__(None, None, None)


def test_an_image_that_is_its_reference_scores_its_likeness_and_a_grey_one_is_flagged_for_its_product(studio, made):
    result, gemini = made
    assert result.success and len(gemini.generate_requests) == 2
    stored = _scores(studio)
    blue, grey = stored["images"]["campaign/blue-shelf.png"], stored["images"]["campaign/red-hero.png"]
    # Byte for byte its reference: as like it as the model can say.
    own = next(r for r in blue["product_fidelity"]["references"] if r["path"] == "blue_square_0.png")
    assert own["sku"] == "SQ-2" and own["similarity"] >= 0.99
    assert blue["prompt_match"]["own_prompt_nearest"] is True
    # The grey one: less like its product than the drop's pictures are like one another, and nearer the
    # other brief's prompt than its own.
    median = stored["median"]
    weakest = grey["product_fidelity"]["weakest"]
    assert weakest["product"] == "DOT-7" and weakest["similarity"] < median
    check = _check(result, "campaign_images_scores")
    assert not check.passed and check.severity.value == "WARN"
    flagged = check.metadata["flagged"].value
    # The flagged list is exactly the images whose scores break either rule.
    breaking = sorted(image for image, s in stored["images"].items()
                      if s["product_fidelity"]["weakest"]["similarity"] < median
                      or not s["prompt_match"]["own_prompt_nearest"])
    assert [f["image"] for f in flagged] == breaking == ["campaign/red-hero.png"]
    match = grey["prompt_match"]
    assert flagged[0]["reasons"] == [
        f"DOT-7 looks least like its photos: {weakest['similarity']:.3f}, under {median:.3f} (the drop's pictures' "
        f"median likeness)",
        f"closer to brief 'blue-shelf''s prompt ({match['nearest_other']['similarity']:.3f}) than to its own "
        f"({match['similarity']:.3f})"]
    facts = metadata(result, "campaign_images")
    assert facts["scored"] == 2 and facts["flagged"] == 1
    # The campaign index takes the vectors the scores were computed from: no image is encoded twice.
    index = metadata(result, "campaign_image_index")
    assert (index["encoded"], index["indexed"]) == (0, 2)
    rows = [r.data for r in facts["scores"].records]
    assert [r["image"] for r in rows] == ["campaign/red-hero.png", "campaign/blue-shelf.png"]  # weakest first
    assert rows[0]["product_fidelity"] == weakest["similarity"] and rows[0]["weakest_product"] == "DOT-7"
    # Each image's sidecar carries its scores and the model that gave them.
    for image, scores in stored["images"].items():
        sidecar = json.loads((studio.artifacts / "spring" / image).with_suffix(".json").read_text())
        assert sidecar["scores"] == {"model": stored["model"], "product_fidelity": scores["product_fidelity"],
                                     "prompt_match": scores["prompt_match"]}
    # The campaign collection's rows hold them as fields a filter can use.
    assert _campaign_rows(studio, index["collection"]) == {
        "campaign/red-hero.png": (weakest["similarity"], match["similarity"], True),
        "campaign/blue-shelf.png": (blue["product_fidelity"]["weakest"]["similarity"],
                                    blue["prompt_match"]["similarity"], False)}
    assert _campaign_rows(studio, index["collection"], "flagged == true") == {
        "campaign/red-hero.png": (weakest["similarity"], match["similarity"], True)}
    assert list(_campaign_rows(studio, index["collection"], f"fidelity < {median}")) == ["campaign/red-hero.png"]

    # Nothing changed: nothing is scored again, and the campaign index does not even open Milvus.
    again = materialize_drop("spring")
    assert metadata(again, "campaign_images")["scored"] == 0 and len(gemini.generate_requests) == 2
    assert _scores(studio) == stored and metadata(again, "campaign_image_index")["synced"] is False


def test_publish_requires_scores_keeps_a_flagged_approved_image_back_and_scores_go_in_the_manifest(
        studio, made, monkeypatch):
    from dagster import materialize

    from assets_pkg.assets import campaign_selects, drop_assets
    from assets_pkg.domain.reviews import Reviews
    from orchestration.definitions import build_resources

    art = studio.artifacts / "spring"
    for image in ("campaign/red-hero.png", "campaign/blue-shelf.png"):
        Reviews(art).record(image, "approve", "", "Ada")
    publish = lambda: materialize(drop_assets, selection=[campaign_selects], partition_key="spring",
                                  resources=build_resources(), instance=in_memory_instance())
    first = metadata(publish(), "campaign_selects")
    folder = studio.root / "publish" / "spring"
    assert first["published"] == 2  # flagged, but the setting is off: a person decided
    rows = {r["image"]: r for r in json.loads((folder / "manifest.json").read_text())}
    stored = _scores(studio)["images"]
    assert rows["red-hero.png"]["product_fidelity"] == stored["campaign/red-hero.png"]["product_fidelity"]["weakest"]["similarity"]
    assert rows["red-hero.png"]["weakest_product"] == "DOT-7" and rows["blue-shelf.png"]["weakest_product"]
    assert "prompt_match" in (folder / "manifest.csv").read_text().splitlines()[0]

    monkeypatch.setenv("PUBLISH_REQUIRES_SCORES", "true")
    result = publish()
    held = metadata(result, "campaign_selects")["held_back_flagged"]
    assert len(held) == 1 and held[0].startswith("red-hero.png: DOT-7 looks least like its photos")
    assert sorted(p.name for p in folder.iterdir()) == ["blue-shelf.png", "manifest.csv", "manifest.json"]
    lines = [e.user_message for e in in_memory_instance().all_logs(result.run_id)]
    assert sum("approved but not published (PUBLISH_REQUIRES_SCORES): red-hero.png: " in m for m in lines) == 1

    # A fixed floor in place of the drop's rule: nothing is under -1.
    monkeypatch.setenv("SCORE_FIDELITY_MIN", "-1")
    monkeypatch.setenv("SCORE_PROMPT_MIN", "-1")
    assert metadata(publish(), "campaign_selects")["published"] == 2


def test_a_threshold_that_is_not_a_similarity_is_one_line(studio, monkeypatch):
    from assets_pkg.run_results import failure

    draw_drop(studio.drops / "spring", briefs=BRIEFS.replace("    products: [DOT-7]\n", "    query: a red circle\n"))
    monkeypatch.setenv("SCORE_FIDELITY_MIN", "high")
    result = materialize_drop("spring")
    assert failure(result, "spring") == ("campaign_images: SCORE_FIDELITY_MIN='high': a cosine similarity from -1 "
                                         "to 1, or unset for the drop's own rule")


@pytest.mark.services
def test_the_review_page_puts_the_weakest_first_names_its_product_and_filters_to_the_flagged(studio, made):
    import os

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from servers import Serve, chrome

    stored = _scores(studio)["images"]
    with Serve({**os.environ, **studio.env}, studio.root / "serve.log") as server:
        detail = {c["path"]: c for c in server.get("/api/drops/spring").json()["campaign"]}
        grey = detail["campaign/red-hero.png"]["scores"]
        assert grey["weakest_product"] == "DOT-7" and len(grey["flagged"]) == 2
        assert grey["product_fidelity"] == stored["campaign/red-hero.png"]["product_fidelity"]["weakest"]["similarity"]
        assert detail["campaign/blue-shelf.png"]["scores"]["flagged"] == []
        browser = chrome()
        try:
            browser.get(server.url + "/#/drop/spring")
            wait = WebDriverWait(browser, 120)
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "article.campaign-image")) == 2)
            cards = browser.find_elements(By.CSS_SELECTOR, "article.campaign-image")
            assert [c.get_attribute("data-path") for c in cards] == ["campaign/red-hero.png", "campaign/blue-shelf.png"]
            text = cards[0].find_element(By.CSS_SELECTOR, ".scores").text
            assert "DOT-7 looks least like its photos" in text
            assert f"product {grey['product_fidelity']:.3f} · prompt {grey['prompt_match']:.3f}" in text
            assert "Flagged: DOT-7 looks least like its photos" in text
            browser.find_element(By.ID, "flagged-only").click()
            visible = [c.get_attribute("data-path") for c in cards if c.is_displayed()]
            assert visible == ["campaign/red-hero.png"]
        finally:
            browser.quit()
