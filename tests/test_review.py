"""From candidates to campaign: decisions on the page (a real browser and the JSON API), revisions by the image
model (the real google-genai SDK against the local Gemini server), base images, and publishing with manifests."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

from conftest import ROOT, draw_drop, materialize_drop, metadata, in_memory_instance
from fake_gemini import FakeGemini, image_reply, png_bytes
from servers import Serve, chrome

API_KEY = "test-key-not-a-secret-0123456789"
MODEL = "gemini-3.1-flash-image"
BRIEFS = """briefs:
  - id: red-hero
    prompt: A red product on a sunny beach
    query: a red circle
    top_k: 2
    variants: 2
  - id: blue-shelf
    prompt: Blue products on a shelf
    query: a blue square
    variants: 3
"""
PRODUCTS = """file,sku,name,category,color
red_circle_0.png,DOT-7,Red dot pin,Pins,Red
blue_square_0.png,SQ-2,Blue square badge,Badges,Blue
"""
NOTE = "warmer light, no text on the bag"
# A note is plain text, never markup; and a word longer than the card (a pasted link) wraps inside it.
MARKUP = '<b>keep</b> <img src=x onerror="document.title=1"> https://cdn.example.com/' + "campaign-asset-" * 12


def decoded(inline: dict) -> bytes:
    data = inline["data"]  # the SDK sends URL-safe base64 without padding
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_clip):
    """A drop whose campaign images the local Gemini server made (five: two variants of one brief, three of
    the other), published to a folder, served."""
    root = tmp_path_factory.mktemp("review")
    with FakeGemini() as gemini:
        env = {**os.environ, "DROPS_DIR": str(root / "drops"), "ARTIFACTS_DIR": str(root / "artifacts"),
               "DROP_STUDIO_MILVUS_URI": str(root / "milvus.db"), "CLIP_MODEL": str(tiny_clip),
               "DAGSTER_HOME": str(root / "dagster_home"), "PUBLISH_DIR": str(root / "publish"),
               "GEMINI_API_KEY": API_KEY, "GOOGLE_GEMINI_BASE_URL": gemini.url, "GEMINI_IMAGE_MODEL": MODEL,
               "GEMINI_RETRY_INITIAL_DELAY_MS": "10"}
        for k in ("MILVUS_TOKEN", "GOOGLE_API_KEY", "DROP_STUDIO_TOKEN", "GEMINI_MAX_COST_USD"):
            env.pop(k, None)
        draw_drop(root / "drops" / "spring", briefs=BRIEFS)
        (root / "drops" / "spring" / "products.csv").write_text(PRODUCTS)
        (root / "dagster_home").mkdir()
        (root / "dagster_home" / "dagster.yaml").write_text((ROOT / "orchestration" / "dagster.yaml").read_text())
        gemini.script = [image_reply(png_bytes((200 + 10 * k, 40, 40))) for k in range(5)]
        proc = subprocess.run([sys.executable, "-m", "assets_pkg.cli", "run"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert len(gemini.generate_requests) == 5
        server = Serve(env, root / "serve.log")
        try:
            yield server, root, env, gemini
        finally:
            server.stop()


def review(server, path: str, decision: str, note: str = "", reviewer: str = "Ada", drop: str = "spring",
           headers: dict | None = None) -> requests.Response:
    return requests.post(server.url + "/api/review", json={"drop": drop, "path": path, "decision": decision,
                                                            "note": note, "reviewer": reviewer},
                         headers=headers or {}, timeout=60)


def images(server) -> dict[str, dict]:
    return {c["path"]: c for c in server.get("/api/drops/spring").json()["campaign"]}


@pytest.mark.services
def test_in_the_browser_approve_reject_and_revise_with_the_model(world):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, root, _, gemini = world
    before = len(gemini.generate_requests)
    parent = root / "artifacts" / "spring" / "campaign" / "red-hero.v2.png"
    browser = chrome()
    try:
        browser.get(server.url + "/#/drop/spring")
        wait = WebDriverWait(browser, 120)
        card = lambda path: browser.find_element(By.CSS_SELECTOR, f'article.campaign-image[data-path="{path}"]')
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "article.campaign-image")) == 5)
        browser.find_element(By.ID, "reviewer").send_keys("Ada Lovelace")
        hero = card("campaign/red-hero.png")
        hero.find_element(By.CSS_SELECTOR, "textarea.note").send_keys(MARKUP)
        hero.find_element(By.CSS_SELECTOR, "button.approve").click()
        wait.until(lambda b: card("campaign/red-hero.png").find_element(By.CSS_SELECTOR, "p.review").text
                   .startswith("Approved by Ada Lovelace"))
        status = card("campaign/red-hero.png").find_element(By.CSS_SELECTOR, "p.review")
        assert status.text.endswith(f": {MARKUP}")  # shown as the text it is
        assert status.find_elements(By.TAG_NAME, "b") == [] and status.find_elements(By.TAG_NAME, "img") == []
        # Nothing in the card is wider than the card: the note, the facts and the history wrap in its column.
        hero = card("campaign/red-hero.png")
        hero.find_element(By.TAG_NAME, "summary").click()  # open the history, which repeats the note
        overflowing = browser.execute_script(
            "const card = arguments[0], right = card.getBoundingClientRect().right + 0.5;"
            "return [...card.querySelectorAll('p.review, table.facts, ol.history li, .name')]"
            ".filter(e => e.scrollWidth > e.clientWidth + 1 || e.getBoundingClientRect().right > right)"
            ".map(e => e.className || e.tagName);", hero)
        assert overflowing == []
        v2 = card("campaign/red-hero.v2.png")
        v2.find_element(By.CSS_SELECTOR, "textarea.note").send_keys(NOTE)
        v2.find_element(By.CSS_SELECTOR, "button.reject").click()
        wait.until(lambda b: card("campaign/red-hero.v2.png").find_element(By.CSS_SELECTOR, "p.review").text
                   .endswith(f": {NOTE}"))
        card("campaign/red-hero.v2.png").find_element(By.CSS_SELECTOR, "button.revise").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, 'article.campaign-image[data-path="campaign/red-hero.v3.png"]'))
        facts = card("campaign/red-hero.v3.png").find_element(By.CSS_SELECTOR, "table.facts").text
        assert "revised from red-hero.v2.png" in facts and f"note {NOTE}" in facts
        browser.save_screenshot(str(root / "review.png"))
        browser_title = browser.title
    finally:
        browser.quit()

    sent = gemini.generate_requests[before:]
    assert len(sent) == 1  # the revision alone: nothing else was asked
    parts = sent[0]["body"]["contents"][0]["parts"]
    assert decoded(parts[0]["inlineData"]) == parent.read_bytes()  # the image to change goes first, as it is
    assert NOTE in parts[-1]["text"]
    assert len(parts) == 4  # the image, red-hero's two references, the instruction
    detail = images(server)
    assert detail["campaign/red-hero.png"]["review"]["decision"] == "approve"
    assert detail["campaign/red-hero.png"]["review"]["reviewer"] == "Ada Lovelace"
    assert detail["campaign/red-hero.png"]["review"]["note"] == MARKUP
    assert (detail["campaign/red-hero.v2.png"]["review"]["decision"], detail["campaign/red-hero.v2.png"]["review"]["note"]) == ("reject", NOTE)
    v3 = detail["campaign/red-hero.v3.png"]
    assert v3["revision"]["parent"] == "campaign/red-hero.v2.png" and v3["revision"]["note"] == NOTE
    assert v3["revision"]["reviewer"] == "Ada Lovelace"
    assert requests.get(server.url + v3["thumbnail"], timeout=60).status_code == 200  # indexed, so served
    assert browser_title != "1"
    # From a product picture to what was made from it: red-hero's references went into its three images.
    brief = next(b for b in server.get("/api/drops/spring").json()["briefs"] if b["id"] == "red-hero")
    for ref in brief["references"]:
        assert ref["used_in"] == ["campaign/red-hero.png", "campaign/red-hero.v2.png", "campaign/red-hero.v3.png"]

    # The same revision again bills nothing: the image made from that parent and note is the answer.
    again = requests.post(server.url + "/api/revise", json={"drop": "spring", "path": "campaign/red-hero.v2.png",
                                                            "note": NOTE}, timeout=300)
    assert again.status_code == 200 and again.json()["path"] == "campaign/red-hero.v3.png"
    assert len(gemini.generate_requests) == before + 1


@pytest.mark.services
def test_twenty_concurrent_decisions_leave_one_decision_and_twenty_history_entries(world):
    server = world[0]
    path = "campaign/blue-shelf.v3.png"
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda k: review(server, path, "approve" if k % 2 else "reject",
                                                 note=f"take {k}", reviewer=f"reviewer {k}"), range(20)))
    assert [a.status_code for a in answers] == [200] * 20
    image = images(server)[path]
    assert len(image["history"]) == 20
    assert sorted(h["reviewer"] for h in image["history"]) == sorted(f"reviewer {k}" for k in range(20))
    last = image["history"][-1]
    assert image["review"] == {k: last[k] for k in ("decision", "note", "reviewer", "time")}


@pytest.mark.services
def test_nothing_is_lost_when_the_server_is_killed_between_two_decisions(world, tmp_path):
    _, root, env, _ = world
    path = "campaign/blue-shelf.v2.png"
    first = Serve(env, tmp_path / "first.log")
    try:
        assert review(first, path, "reject", note="too dark", reviewer="Bo").status_code == 200
    finally:
        first.proc.kill()  # SIGKILL: no shutdown of any kind
        first.proc.wait()
    second = Serve(env, tmp_path / "second.log")
    try:
        assert review(second, path, "approve", reviewer="Cy").status_code == 200
        image = images(second)[path]
    finally:
        second.stop()
    assert [(h["decision"], h["note"], h["reviewer"]) for h in image["history"]] == [
        ("reject", "too dark", "Bo"), ("approve", "", "Cy")]
    assert image["review"]["decision"] == "approve"


@pytest.mark.services
def test_writes_need_the_token_and_refuse_cross_site_requests_and_bad_fields(world, tmp_path):
    _, root, env, gemini = world
    token = "tok-" + os.urandom(6).hex()
    guarded = Serve({**env, "DROP_STUDIO_TOKEN": token, "GEMINI_MAX_COST_USD": "0.01"}, tmp_path / "guarded.log")
    auth = {"Authorization": f"Bearer {token}"}
    try:
        assert review(guarded, "campaign/blue-shelf.png", "approve").status_code == 401
        assert review(guarded, "campaign/blue-shelf.png", "approve",
                      headers={**auth, "Origin": "https://evil.example"}).json() == {
            "error": "origin: cross-site requests are refused"}
        assert review(guarded, "campaign/blue-shelf.png", "approve",
                      headers={**auth, "Sec-Fetch-Site": "cross-site"}).status_code == 403
        form = requests.post(guarded.url + "/api/review", headers=auth, timeout=30,
                             data={"drop": "spring", "path": "campaign/blue-shelf.png", "decision": "approve"})
        assert form.status_code == 400 and form.json()["error"].startswith("body: send JSON")
        bad = {
            ("nowhere", "campaign/blue-shelf.png", "approve", "", "Ada"): "drop: no such drop 'nowhere'",
            ("spring", "campaign/blue-shelf.v9.png", "approve", "", "Ada"):
                "path: no campaign image 'campaign/blue-shelf.v9.png' in drop 'spring'",
            ("spring", "red_circle_0.png", "approve", "", "Ada"): "path: no campaign image 'red_circle_0.png' in drop 'spring'",
            ("spring", "campaign/blue-shelf.png", "love", "", "Ada"):
                "decision: must be one of approve, reject, clear, got 'love'",
            ("spring", "campaign/blue-shelf.png", "reject", "x" * 1001, "Ada"): "note: 1001 characters; at most 1000",
            ("spring", "campaign/blue-shelf.png", "reject", "ok", ""): "reviewer: missing or empty",
        }
        for (drop, path, decision, note, reviewer), error in bad.items():
            r = review(guarded, path, decision, note=note, reviewer=reviewer, drop=drop, headers=auth)
            assert (r.status_code, r.json()) == (400, {"error": error})
        assert images(world[0])["campaign/blue-shelf.png"]["history"] == []  # none of those was recorded

        # A revision over GEMINI_MAX_COST_USD asks the model nothing and says so in one line.
        before = len(gemini.generate_requests)
        r = requests.post(guarded.url + "/api/revise", headers=auth, timeout=300,
                          json={"drop": "spring", "path": "campaign/blue-shelf.png", "note": "bluer"})
        assert r.status_code == 409
        assert r.json()["error"] == (f"estimated $0.067 for 1 image(s) on {MODEL} (interactive) is over "
                                     f"GEMINI_MAX_COST_USD=0.01; nothing was requested")
        assert len(gemini.generate_requests) == before
    finally:
        guarded.stop()
    assert token not in (tmp_path / "guarded.log").read_text()


@pytest.mark.services
def test_publish_holds_exactly_the_approved_images_and_unapproval_removes_them(world):
    server, root, env, _ = world
    assert review(server, "campaign/blue-shelf.png", "approve", reviewer="Dee").status_code == 200
    assert review(server, "campaign/red-hero.png", "approve", reviewer="Dee").status_code == 200

    def run_and_read() -> tuple[set[str], list[dict], list[dict]]:
        proc = subprocess.run([sys.executable, "-m", "assets_pkg.cli", "run", "--drop", "spring"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        folder = root / "publish" / "spring"
        files = {p.name for p in folder.iterdir()}
        with open(folder / "manifest.csv", newline="") as f:
            rows_csv = list(csv.DictReader(f))
        return files, json.loads((folder / "manifest.json").read_text()), rows_csv

    detail = images(server)
    approved = sorted(p for p, c in detail.items() if c["review"] and c["review"]["decision"] == "approve")
    assert {"campaign/blue-shelf.png", "campaign/red-hero.png"} <= set(approved)
    files, rows, rows_csv = run_and_read()
    assert files == {p.split("/")[1] for p in approved} | {"manifest.json", "manifest.csv"}
    assert [r["image"] for r in rows] == [p.split("/")[1] for p in approved]
    art = root / "artifacts" / "spring" / "campaign"
    for row, row_csv in zip(rows, rows_csv):
        sidecar = json.loads((art / row["image"]).with_suffix(".json").read_text())
        png = (root / "publish" / "spring" / row["image"]).read_bytes()
        assert png == (art / row["image"]).read_bytes()
        decision = detail[f"campaign/{row['image']}"]["review"]
        # The image's scores (docs/scores.md), as campaign_images left them for the serving model.
        [scores] = list((root / "artifacts" / "spring").rglob("scores.json"))
        scored = json.loads(scores.read_text())["images"][f"campaign/{row['image']}"]
        assert (row.pop("weakest_product"), row.pop("product_fidelity"), row.pop("prompt_match")) == (
            scored["product_fidelity"]["weakest"]["product"], scored["product_fidelity"]["weakest"]["similarity"],
            scored["prompt_match"]["similarity"])
        assert row == {
            "image": row["image"], "sha256": hashlib.sha256(png).hexdigest(), "drop": "spring",
            "brief": sidecar["brief"]["id"], "prompt": sidecar["brief"]["prompt"], "model": MODEL, "size": "1K",
            "aspect_ratio": "", "cost_usd": 0.067,
            "references": [{"path": r["path"], "sha256": r["sha256"], "sku": r["sku"] or ""} for r in sidecar["references"]],
            "base_image": "", "parent": (sidecar.get("revision") or {}).get("parent", ""),
            "note": (sidecar.get("revision") or {}).get("note", ""), "reviewer": decision["reviewer"],
            "approved_at": decision["time"]}
        assert json.loads(row_csv["references"]) == row["references"] and row_csv["sha256"] == row["sha256"]
    catalog = {"red_circle_0.png": "DOT-7", "blue_square_0.png": "SQ-2"}
    refs = [ref for r in rows for ref in r["references"]]
    assert [ref["sku"] for ref in refs] == [catalog.get(ref["path"], "") for ref in refs]
    assert any(ref["sku"] for ref in refs)  # the catalog's SKUs are there

    assert review(server, "campaign/blue-shelf.png", "clear", reviewer="Dee").status_code == 200
    files, rows, _ = run_and_read()
    assert "blue-shelf.png" not in files and "blue-shelf.png" not in [r["image"] for r in rows]
    assert "red-hero.png" in files


@pytest.mark.services
def test_the_reviews_sensor_asks_for_a_publish_run_when_decisions_change(world, monkeypatch):
    from dagster import DagsterInstance, build_sensor_context

    from orchestration.sensors import campaign_reviews
    from assets_pkg.resources import DropLibrary

    server, root, env, _ = world
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    with DagsterInstance.get() as instance:
        library = DropLibrary(drops_dir=env["DROPS_DIR"], artifacts_dir=env["ARTIFACTS_DIR"])
        first = campaign_reviews(build_sensor_context(instance=instance, resources={"library": library}))
        assert campaign_reviews.job_name == "publish_selects"
        assert [r.partition_key for r in first.run_requests] == ["spring"]
        quiet = campaign_reviews(build_sensor_context(instance=instance, cursor=first.cursor,
                                                      resources={"library": library}))
        assert quiet.run_requests == []
        assert review(server, "campaign/red-hero.png", "reject", note="no", reviewer="Eve").status_code == 200
        again = campaign_reviews(build_sensor_context(instance=instance, cursor=first.cursor,
                                                      resources={"library": library}))
        assert [r.partition_key for r in again.run_requests] == ["spring"]
        assert again.run_requests[0].run_key != first.run_requests[0].run_key


def test_a_brief_with_a_base_image_sends_it_first_and_a_missing_one_fails_before_billing(studio, monkeypatch):
    with FakeGemini() as gemini:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", gemini.url)
        monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
        shared = studio.root / "shared"
        (shared / "models").mkdir(parents=True)
        buf = io.BytesIO()
        Image.new("RGB", (300, 400), (90, 120, 200)).save(buf, "JPEG", quality=90)
        (shared / "models" / "anna-front.jpg").write_bytes(buf.getvalue())
        monkeypatch.setenv("BASE_IMAGES_DIR", str(shared))
        draw_drop(studio.drops / "spring", briefs="""briefs:
  - id: anna-beach
    prompt: Anna wears the red product on the beach
    query: a red circle
    top_k: 2
    base_image: models/anna-front.jpg
""")
        result = materialize_drop("spring")
        assert result.success
        parts = gemini.generate_requests[0]["body"]["contents"][0]["parts"]
        assert decoded(parts[0]["inlineData"]) == buf.getvalue()  # the base shot first, as it is
        assert len(parts) == 4 and "Anna wears the red product on the beach" in parts[-1]["text"]
        sidecar = json.loads((studio.artifacts / "spring" / "campaign" / "anna-beach.json").read_text())
        assert sidecar["base_image"] == "models/anna-front.jpg"
        assert sidecar["request"]["base_image"] == hashlib.sha256(buf.getvalue()).hexdigest()
        assert metadata(result, "campaign_images")["generated"] == 1

        (studio.drops / "spring" / "briefs.yaml").write_text((studio.drops / "spring" / "briefs.yaml").read_text()
                                                              .replace("anna-front.jpg", "anna-back.jpg"))
        asked = len(gemini.generate_requests)
        failed = materialize_drop("spring")
        assert not failed.success and len(gemini.generate_requests) == asked
        from assets_pkg.run_results import failure

        assert failure(failed, "spring") == (
            f"campaign_briefs: {studio.drops / 'spring' / 'briefs.yaml'}: brief 'anna-beach': base_image "
            f"'models/anna-back.jpg' not found in the drop or BASE_IMAGES_DIR={shared}")


def test_offline_the_board_makes_revisions_and_later_runs_keep_them(studio):
    from dagster import materialize

    from assets_pkg.assets import campaign_images, drop_assets
    from orchestration.definitions import build_resources

    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    assert materialize_drop("spring").success
    campaign = studio.artifacts / "spring" / "campaign"
    parent = (campaign / "blue-shelf.v2.png").read_bytes()

    def revise(path: str, note: str):
        return materialize(drop_assets, selection=[campaign_images], partition_key="spring", resources=build_resources(),
                           instance=in_memory_instance(), raise_on_error=False, run_config={"ops": {"campaign_images": {"config": {
                               "revise": path, "note": note, "reviewer": "Fay"}}}})

    made = revise("campaign/blue-shelf.v2.png", "bluer sky")
    assert made.success
    assert metadata(made, "campaign_images")["revision"] == "campaign/blue-shelf.v4.png"  # after the brief's 3
    sidecar = json.loads((campaign / "blue-shelf.v4.json").read_text())
    assert sidecar["generator"] == "offline-board"
    assert sidecar["revision"] == {"parent": "campaign/blue-shelf.v2.png", "parent_sha256": hashlib.sha256(parent).hexdigest(),
                                   "note": "bluer sky", "reviewer": "Fay"}
    with Image.open(campaign / "blue-shelf.v4.png") as im:
        assert im.size == Image.open(campaign / "blue-shelf.png").size  # the brief's size

    again = revise("campaign/blue-shelf.v2.png", "bluer sky")
    assert metadata(again, "campaign_images")["revision"] == "campaign/blue-shelf.v4.png"
    assert metadata(again, "campaign_images")["requests"] == 0
    assert sorted(p.name for p in campaign.glob("blue-shelf*.png")) == [
        "blue-shelf.png", "blue-shelf.v2.png", "blue-shelf.v3.png", "blue-shelf.v4.png"]

    full = materialize_drop("spring")  # a full run keeps the revision, asks for nothing
    assert full.success and metadata(full, "campaign_images")["requests"] == 0
    assert (campaign / "blue-shelf.v4.png").exists() and metadata(full, "campaign_images")["generated"] == 6

    wrong = revise("campaign/blue-shelf.v9.png", "x")
    from assets_pkg.run_results import failure

    assert failure(wrong, "spring") == "campaign_images: path: 'campaign/blue-shelf.v9.png' is not a campaign image of this drop"


def test_a_revision_from_the_page_runs_through_the_clis_runner_with_the_weights_the_page_holds(studio, monkeypatch):
    from dagster import DagsterInstance

    from assets_pkg.domain import encoder
    from assets_pkg.resources import ClipModel, MilvusResource
    from assets_pkg.web.server import build_service, page_desk

    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    assert materialize_drop("spring").success
    loads = []
    real_init = encoder.ClipEncoder.__init__

    def counted(self, *args, **kwargs):  # the real encoder, counted
        loads.append(args[0])
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(encoder.ClipEncoder, "__init__", counted)
    clip = ClipModel()
    service = build_service(MilvusResource(), clip)
    try:
        service.encoder()  # the page loads its model once, before the first request
        desk = page_desk(service, clip)
        made = desk.revise("spring", {"path": "campaign/blue-shelf.v2.png", "note": "bluer sky", "reviewer": "Fay"})
        assert made == "campaign/blue-shelf.v4.png"
        assert len(loads) == 1  # the revision's run encoded its image with the page's weights
        hits, _ = service.search("bluer sky", "spring", 20, kinds=("campaign",))
        assert "campaign/blue-shelf.v4.png" in {h.path for h in hits}  # indexed by the same run
    finally:
        service.close()
    run = DagsterInstance.get().get_runs(limit=1)[0]
    assert (run.tags["trigger"], run.tags["launched_by"], run.tags["revision/parent"]) == (
        "revision", "drop-studio", "campaign/blue-shelf.v2.png")
