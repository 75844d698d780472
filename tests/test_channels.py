"""Ship-ready renditions: each channel's exact size under its limit, cut from one image model request per
distinct aspect ratio (the real google-genai SDK against the local Gemini server, which answers at the ratio
and size asked), with XMP read back by exiv2 and a C2PA manifest signed with a test brand certificate,
validated by c2pa.Reader against the test CA as trust anchor."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from assets_pkg.domain.channels import CHANNELS, ChannelError, channels_for, read_channels_file, requests_for
from assets_pkg.domain.image_models import ASPECT_RATIOS, IMAGE_SIZES, output_size
from conftest import draw_drop, materialize_drop, metadata, in_memory_instance
from fake_gemini import FakeGemini, asked_size
from signing import make_signing_files

API_KEY = "test-key-not-a-secret-0123456789"
CHANNEL_BRIEFS = """briefs:
  - id: red-hero
    prompt: A red product on a sunny beach
    query: a red circle
    aspect_ratio: "4:5"
    channels: [meta-feed, pmax-portrait, meta-story, pmax-landscape, merchant]
    focus: top
  - id: blue-shelf
    prompt: Blue products on a shelf
    query: a blue square
"""
PRODUCTS = """file,sku,name,category,color
red_circle_0.png,DOT-7,Red dot pin,Pins,Red
red_circle_1.png,DOT-8,Red dot pin (back),Pins,Red
"""


@pytest.mark.parametrize("text, line", [
    ("meta-feed: {size: 1080x}\n", "channel 'meta-feed': field 'size': WIDTHxHEIGHT in pixels, like 1080x1350, got '1080x'"),
    ("shop-banner: {format: jpeg}\n", "channel 'shop-banner': field 'size' is missing"),
    ("shop-banner: {size: 1600x500, colour: red}\n", "channel 'shop-banner': field 'colour':"),
    ("shop-banner: {size: 1600x500, max_kb: '800'}\n", "channel 'shop-banner': field 'max_kb': an integer number of KB, got '800'"),
    ("Shop: {size: 1600x500}\n", "channel 'Shop': a channel name is 1-40 lowercase letters, digits or '-'"),
    ("shop-banner: {size: 600x500, min: 700x100}\n", "channel 'shop-banner': field 'min': 700x100 is larger than its size 600x500"),
    ("shop-banner: [1600, 500]\n", "channel 'shop-banner': expected its fields"),
    ("shop-banner: {size: 1600x500\n", "not valid YAML"),
])
def test_a_bad_channels_yaml_entry_is_one_line_naming_the_file_the_entry_and_the_field(tmp_path, text, line):
    path = tmp_path / "channels.yaml"
    path.write_text(text)
    with pytest.raises(ChannelError) as e:
        read_channels_file(path, CHANNELS)
    message = str(e.value)
    assert message.startswith(str(path)) and line in message and "\n" not in message


def test_a_drops_channels_yaml_overrides_dropss_dir_which_overrides_the_table(tmp_path):
    (tmp_path / "drop").mkdir()
    (tmp_path / "channels.yaml").write_text("meta-feed: {max_kb: 900}\nshop-banner: {size: 1600x500}\n")
    (tmp_path / "drop" / "channels.yaml").write_text("shop-banner: {size: 1600x400, format: png}\n")
    table = channels_for(tmp_path, tmp_path / "drop")
    assert (table["meta-feed"].width, table["meta-feed"].height, table["meta-feed"].max_bytes) == (1080, 1350, 900 * 1024)
    assert (table["shop-banner"].width, table["shop-banner"].height, table["shop-banner"].format) == (1600, 400, "png")
    assert table["merchant"] == CHANNELS["merchant"]


def test_one_request_per_distinct_ratio_at_the_smallest_size_that_covers_its_channels():
    names = ["meta-feed", "pmax-portrait", "meta-story", "pmax-landscape", "merchant", "pmax-square"]
    plan = requests_for([CHANNELS[n] for n in names], ASPECT_RATIOS, IMAGE_SIZES)
    # 4:5 serves meta-feed and pmax-portrait; 1.91:1 is cut from 16:9; 1K's 1344x768 covers 1200x628.
    assert plan == {"4:5": "2K", "9:16": "2K", "16:9": "1K", "1:1": "2K"}
    assert requests_for([CHANNELS["meta-feed"]], ASPECT_RATIOS, ("512", "1K")) == {"4:5": "1K"}  # its largest


def test_renditions_are_exact_never_stretched_and_refused_beyond_one_and_a_half_times():
    from assets_pkg.stages.selects.renditions import RenditionRefused, cut

    # A tall image with a red top half: focus top keeps the red, center keeps both.
    source = Image.new("RGB", output_size("9:16", "2K"), (0, 0, 255))
    source.paste((255, 0, 0), (0, 0, source.width, source.height // 2))
    landscape = cut(source, CHANNELS["pmax-landscape"], "top")
    assert landscape.image.size == (1200, 628) and not landscape.upscaled
    assert landscape.image.getpixel((600, 620)) == (255, 0, 0)  # all from the top half
    story = cut(source, CHANNELS["meta-story"], "center")
    assert story.image.size == (1080, 1920) and story.image.getpixel((540, 5))[0] > 250
    small = Image.new("RGB", (896, 1152))
    feed = cut(small, CHANNELS["meta-feed"])
    assert feed.image.size == (1080, 1350) and feed.upscaled and feed.scale == pytest.approx(1080 / 896)
    with pytest.raises(RenditionRefused, match=r"merchant: the image is 640x640; 1500x1500 would enlarge it 2.34x"):
        cut(Image.new("RGB", (640, 640)), CHANNELS["merchant"])


def test_a_rendition_over_its_limit_is_encoded_again_at_lower_quality_or_refused():
    import numpy as np

    from assets_pkg.domain.channels import Channel
    from assets_pkg.stages.selects.provenance import Provenance
    from assets_pkg.stages.selects.publishing import Source, make_rendition
    from assets_pkg.stages.selects.renditions import RenditionRefused

    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1200, 1200, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, "PNG")
    source = Source("campaign/x.png", 1.0, buf.getvalue())
    facts = Provenance("t", "b", "p", [], "m", False, "c", "Ada", "2026-12-03T00:00:00Z")
    data, made = make_rendition(source, Channel("tight", 1000, 1000, max_bytes=400 * 1024), "center", facts, None,
                                lambda i: None)
    assert len(data) <= 400 * 1024 and made["quality"] < 90 and Image.open(io.BytesIO(data)).size == (1000, 1000)
    with pytest.raises(RenditionRefused, match=r"^tiny: \d+ KB at the lowest quality, over its limit of 20 KB$"):
        make_rendition(source, Channel("tiny", 1000, 1000, max_bytes=20 * 1024), "center", facts, None, lambda i: None)


@pytest.mark.parametrize("problem, line", [
    ({"expired": True}, "the certificate expired on"),
    ({"for_signing": False}, "the certificate is not for signing (its key usage lacks digitalSignature)"),
    ({"other_key": True}, "the certificate is not C2PA_PRIVATE_KEY's"),
])
def test_a_certificate_that_cannot_sign_is_one_line_and_never_shows_the_key(tmp_path, problem, line):
    from assets_pkg.stages.selects.provenance import BrandSigner, SigningError

    files = make_signing_files(tmp_path, **problem)
    with pytest.raises(SigningError) as e:
        BrandSigner.load(str(files["chain"]), str(files["key"]))
    assert line in str(e.value) and str(e.value).startswith(f"C2PA_SIGN_CERT {files['chain']}")
    assert "PRIVATE KEY" not in str(e.value) and "\n" not in str(e.value)


def _approve(art, image: str) -> None:
    from assets_pkg.domain.reviews import Reviews

    Reviews(art).record(image, "approve", "", "Ada")


def _publish(extra_env: dict, monkeypatch):
    from dagster import materialize

    from assets_pkg.assets import campaign_selects, drop_assets
    from orchestration.definitions import build_resources

    for k, v in extra_env.items():
        monkeypatch.setenv(k, v)
    return materialize(drop_assets, selection=[campaign_selects], partition_key="spring", resources=build_resources(),
                       instance=in_memory_instance(), raise_on_error=False)


def _reader(data: bytes, mime: str, ca: Path):
    import c2pa

    context = c2pa.Context.from_dict({"trust": {"trust_anchors": ca.read_text()}, "verify": {"verify_trust": True}})
    return c2pa.Reader(mime, io.BytesIO(data), context=context)


def test_a_brief_with_channels_publishes_each_channels_exact_rendition_labelled_and_signed(studio, monkeypatch,
                                                                                           tmp_path, capfd):
    import pyexiv2

    keys = make_signing_files(tmp_path / "brand-keys")
    draw_drop(studio.drops / "spring", briefs=CHANNEL_BRIEFS)
    (studio.drops / "spring" / "products.csv").write_text(PRODUCTS)
    with FakeGemini() as gemini:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", gemini.url)
        monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
        result = materialize_drop("spring")
        assert result.success
        # One request per distinct ratio of red-hero's channels (4:5 its own, shared by meta-feed and
        # pmax-portrait; 9:16; 16:9 for 1.91:1; 1:1), each at the smallest size covering them; blue-shelf one.
        asked = sorted((asked_size(r["body"]) for r in gemini.generate_requests), key=str)
        assert asked == sorted([("4:5", "2K"), ("9:16", "2K"), ("16:9", "1K"), ("1:1", "2K"), (None, "1K")], key=str)
    art = studio.artifacts / "spring"
    _approve(art, "campaign/red-hero.png")
    _approve(art, "campaign/blue-shelf.png")
    env = {"C2PA_SIGN_CERT": str(keys["chain"]), "C2PA_PRIVATE_KEY": str(keys["key"])}
    published = _publish(env, monkeypatch)
    assert published.success
    facts = metadata(published, "campaign_selects")
    assert (facts["renditions"], facts["renditions_signed"], facts["renditions_refused"]) == (5, 5, [])
    folder = studio.root / "publish" / "spring"
    rows = json.loads((folder / "manifest.json").read_text())
    by_channel = {r["channel"]: r for r in rows if r.get("channel")}
    assert sorted(by_channel) == ["merchant", "meta-feed", "meta-story", "pmax-landscape", "pmax-portrait"]
    assert {r["image"] for r in rows if not r.get("channel")} == {"red-hero.png", "blue-shelf.png"}
    refs = json.loads((art / "references.json").read_text())["red-hero"]
    for name, row in by_channel.items():
        channel = CHANNELS[name]
        data = (folder / row["image"]).read_bytes()
        assert row["image"] == f"red-hero.{name}.jpg" and row["sha256"] == hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as im:
            assert im.size == (channel.width, channel.height) == (row["width"], row["height"])
        assert channel.max_bytes is None or len(data) <= channel.max_bytes
        assert row["source"] == {"meta-feed": "campaign/red-hero.png", "pmax-portrait": "campaign/red-hero.png",
                                 "meta-story": "campaign/ratios/red-hero@9x16.png",
                                 "pmax-landscape": "campaign/ratios/red-hero@16x9.png",
                                 "merchant": "campaign/ratios/red-hero@1x1.png"}[name]
        assert row["upscaled"] is False and row["signed"] is True
        # The XMP, read back by exiv2.
        image = pyexiv2.ImageData(data)
        xmp = image.read_xmp()
        image.close()
        assert xmp["Xmp.iptcExt.DigitalSourceType"] == \
            "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
        assert xmp["Xmp.photoshop.TransmissionReference"] == "red-hero"
        # The C2PA manifest: trusted against the test CA, the action, the software agent, the ingredients.
        reader = _reader(data, "image/jpeg", keys["ca"])
        assert reader.get_validation_state() == "Trusted"
        manifest = reader.get_active_manifest()
        actions = next(a for a in manifest["assertions"] if a["label"].startswith("c2pa.actions"))["data"]["actions"]
        assert actions[0]["action"] == "c2pa.created"
        assert actions[0]["softwareAgent"]["name"] == "gemini-3.1-flash-image"
        got = {i["metadata"]["dropstudio:path"]: i["metadata"]["dropstudio:sha256"] for i in manifest["ingredients"]}
        assert got == {r["path"]: hashlib.sha256((studio.drops / "spring" / r["path"]).read_bytes()).hexdigest()
                       for r in refs}
        review = next(a for a in manifest["assertions"] if a["label"] == "com.dropstudio.review")["data"]
        assert (review["reviewer"], review["channel"]) == ("Ada", name)
    # One changed byte and the signature no longer holds.
    data = bytearray((folder / "red-hero.meta-feed.jpg").read_bytes())
    data[len(data) // 2] ^= 0x01
    assert _reader(bytes(data), "image/jpeg", keys["ca"]).get_validation_state() == "Invalid"

    # Nothing changed: nothing is cut, encoded or signed again.
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    again = metadata(_publish(env, monkeypatch), "campaign_selects")
    assert again["copied"] == [] and {p.name: p.read_bytes() for p in folder.iterdir()} == before

    # The private key is in no file but its own, and in no log line.
    secret = keys["key"].read_bytes().split(b"\n")[1]
    for path in studio.root.rglob("*"):
        if path.is_file() and path != keys["key"]:
            assert secret not in path.read_bytes(), path
    out, err = capfd.readouterr()
    assert secret.decode() not in out + err


def test_without_a_certificate_renditions_are_published_unsigned_with_their_xmp(studio, monkeypatch):
    import pyexiv2

    draw_drop(studio.drops / "spring", briefs=CHANNEL_BRIEFS.replace(
        "[meta-feed, pmax-portrait, meta-story, pmax-landscape, merchant]", "[pmax-landscape]"))
    assert materialize_drop("spring").success  # the offline board, at the ratios and sizes asked
    _approve(studio.artifacts / "spring", "campaign/red-hero.png")
    monkeypatch.delenv("C2PA_SIGN_CERT", raising=False)
    result = _publish({}, monkeypatch)
    facts = metadata(result, "campaign_selects")
    assert (facts["renditions"], facts["renditions_signed"]) == (1, 0)
    lines = [e.user_message for e in in_memory_instance().all_logs(result.run_id)]
    assert sum("spring: renditions published unsigned (no C2PA certificate" in m for m in lines) == 1
    data = (studio.root / "publish" / "spring" / "red-hero.pmax-landscape.jpg").read_bytes()
    image = pyexiv2.ImageData(data)
    assert image.read_xmp()["Xmp.iptcExt.DigitalSourceType"].endswith("/trainedAlgorithmicMedia")
    image.close()
    assert Image.open(io.BytesIO(data)).size == (1200, 628)


def test_a_wrong_certificate_or_an_unknown_channel_is_one_line_with_nothing_published_or_billed(
        studio, monkeypatch, tmp_path):
    from assets_pkg.run_results import failure

    keys = make_signing_files(tmp_path / "keys", expired=True)
    draw_drop(studio.drops / "spring", briefs=CHANNEL_BRIEFS)
    assert materialize_drop("spring").success
    _approve(studio.artifacts / "spring", "campaign/red-hero.png")
    result = _publish({"C2PA_SIGN_CERT": str(keys["chain"]), "C2PA_PRIVATE_KEY": str(keys["key"])}, monkeypatch)
    assert not result.success
    assert failure(result, "spring").startswith(f"campaign_selects: C2PA_SIGN_CERT {keys['chain']}: the certificate expired")
    assert not (studio.root / "publish" / "spring").exists()  # nothing published, not even the PNG

    (studio.drops / "spring" / "briefs.yaml").write_text(CHANNEL_BRIEFS.replace("merchant]", "tiktok]"))
    with FakeGemini() as gemini:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", gemini.url)
        monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
        bad = materialize_drop("spring")
        assert gemini.generate_requests == []
    assert failure(bad, "spring") == (
        f"campaign_briefs: {studio.drops / 'spring' / 'briefs.yaml'}: brief 'red-hero': unknown channel 'tiktok' "
        f"(known: {', '.join(sorted(CHANNELS))}; add your own in channels.yaml)")


@pytest.mark.services
def test_the_page_shows_each_channels_cut_with_the_storys_safe_zones_and_one_crop_can_be_rejected(studio):
    import os

    import requests
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from servers import Serve, chrome

    draw_drop(studio.drops / "spring", briefs=CHANNEL_BRIEFS.replace(
        "[meta-feed, pmax-portrait, meta-story, pmax-landscape, merchant]", "[meta-story, pmax-landscape]"))
    assert materialize_drop("spring").success  # the offline board, at the ratios and sizes asked
    env = {**os.environ, **studio.env}
    with Serve(env, studio.root / "serve.log") as server:
        hero = next(c for c in server.get("/api/drops/spring").json()["campaign"] if c["path"] == "campaign/red-hero.png")
        story, landscape = hero["renditions"]
        assert (story["channel"], story["width"], story["height"], story["safe_top"], story["safe_bottom"]) == \
            ("meta-story", 1080, 1920, 250, 340)
        assert (landscape["channel"], landscape["width"], landscape["height"]) == ("pmax-landscape", 1200, 628)
        preview = requests.get(server.url + story["preview"], timeout=60)
        with Image.open(io.BytesIO(preview.content)) as im:  # the story's cut, at the story's shape
            assert preview.status_code == 200 and im.height == 400 and im.width == round(400 * 1080 / 1920)
        wrong = requests.post(server.url + "/api/review", json={
            "drop": "spring", "path": "campaign/red-hero.png", "channel": "merchant", "decision": "reject",
            "reviewer": "Ada"}, timeout=60)
        assert wrong.status_code == 400 and wrong.json()["error"] == (
            "channel: campaign/red-hero.png has no rendition for 'merchant'; its brief names meta-story, pmax-landscape")

        browser = chrome()
        try:
            browser.get(server.url + "/#/drop/spring")
            wait = WebDriverWait(browser, 120)
            selector = 'article.campaign-image[data-path="campaign/red-hero.png"] figure.rendition[data-channel="%s"]'
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, selector % "meta-story"))
            figure = browser.find_element(By.CSS_SELECTOR, selector % "meta-story")
            browser.execute_script("arguments[0].scrollIntoView()", figure)  # its preview loads when in view
            wait.until(lambda b: b.execute_script("return arguments[0].querySelector('img').naturalWidth", figure) > 0)
            frame = figure.find_element(By.CSS_SELECTOR, ".rendition-frame").rect
            zones = {z.get_attribute("class"): z.rect for z in figure.find_elements(By.CSS_SELECTOR, ".safe-zone")}
            assert frame["height"] / frame["width"] == pytest.approx(1920 / 1080, rel=0.02)
            assert zones["safe-zone top"]["height"] / frame["height"] == pytest.approx(250 / 1920, abs=0.01)
            assert zones["safe-zone bottom"]["height"] / frame["height"] == pytest.approx(340 / 1920, abs=0.01)
            assert zones["safe-zone top"]["y"] == pytest.approx(frame["y"], abs=1)
            assert zones["safe-zone bottom"]["y"] + zones["safe-zone bottom"]["height"] == \
                pytest.approx(frame["y"] + frame["height"], abs=1)
            assert browser.find_element(By.CSS_SELECTOR, selector % "pmax-landscape").find_elements(
                By.CSS_SELECTOR, ".safe-zone") == []
            browser.find_element(By.ID, "reviewer").send_keys("Ada")
            card = browser.find_element(By.CSS_SELECTOR, 'article.campaign-image[data-path="campaign/red-hero.png"]')
            card.find_element(By.CSS_SELECTOR, ".actions button.approve").click()  # the image
            wait.until(lambda b: card.find_element(By.CSS_SELECTOR, "p.review").text.startswith("Approved by Ada"))
            figure.find_element(By.CSS_SELECTOR, "button.reject").click()  # the story's crop alone
            wait.until(lambda b: figure.find_element(By.CSS_SELECTOR, "span.review").text == "Rejected by Ada")
        finally:
            browser.quit()

    result = _publish({}, monkeypatch=pytest.MonkeyPatch())
    facts = metadata(result, "campaign_selects")
    assert facts["renditions_rejected"] == ["red-hero.meta-story: rejected by Ada"]
    folder = studio.root / "publish" / "spring"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.csv", "manifest.json", "red-hero.pmax-landscape.jpg",
                                                        "red-hero.png"]
    # Cleared, the story's rendition is published again; the image's approval was never touched.
    from assets_pkg.domain.reviews import Reviews

    Reviews(studio.artifacts / "spring").record("campaign/red-hero.png", "clear", "", "Ada", channel="meta-story")
    again = metadata(_publish({}, monkeypatch=pytest.MonkeyPatch()), "campaign_selects")
    assert again["renditions_rejected"] == [] and (folder / "red-hero.meta-story.jpg").exists()
