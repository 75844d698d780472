"""`drop-studio serve`: the JSON API through a real HTTP server (uvicorn in its own process), its refusals,
and the page in a real browser (Debian's chromium driven by Selenium)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import pytest
import requests
from PIL import Image

from conftest import BRIEFS, ROOT, draw_drop
from servers import Serve, chrome

pytestmark = pytest.mark.services  # starts real servers: left out of `make test-fast`


SUMMER_PRODUCTS = """file,sku,name,category,color
green_star_0.png,STAR-1,Star badge,Badges,Green
green_star_1.png,STAR-1,Star badge (back),Badges,Green
red_circle_0.png,DOT-7,Red dot pin,Pins,Red
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_clip):
    """Two drops run through the whole graph (campaign images by the offline board, indexed too), served."""
    root = tmp_path_factory.mktemp("serve")
    env = {**os.environ, "DROPS_DIR": str(root / "drops"), "ARTIFACTS_DIR": str(root / "artifacts"),
           "DROP_STUDIO_MILVUS_URI": str(root / "milvus.db"), "CLIP_MODEL": str(tiny_clip),
           "DAGSTER_HOME": str(root / "dagster_home")}
    for k in ("MILVUS_TOKEN", "GEMINI_API_KEY", "GOOGLE_API_KEY", "DROP_STUDIO_TOKEN"):
        env.pop(k, None)
    draw_drop(root / "drops" / "spring", briefs=BRIEFS)
    draw_drop(root / "drops" / "summer", spec=[("green", "star", 2), ("red", "circle", 1)], seed=11)
    (root / "drops" / "summer" / "products.csv").write_text(SUMMER_PRODUCTS)
    (root / "dagster_home").mkdir()
    (root / "dagster_home" / "dagster.yaml").write_text((ROOT / "orchestration" / "dagster.yaml").read_text())
    proc = subprocess.run([sys.executable, "-m", "assets_pkg.cli", "run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    server = Serve(env, root / "serve.log")
    yield server, root, env
    server.stop()


def names(hits) -> list[str]:
    return [h["path"].rsplit("/", 1)[-1].rsplit("_", 1)[0] for h in hits]


def test_drops_list_exact_counts(served):
    server, _, _ = served
    r = server.get("/api/drops")
    assert r.status_code == 200
    assert r.json() == [
        {"drop": "spring", "images": 24, "indexed": 24, "briefs": 2, "campaign_images": 2},
        {"drop": "summer", "images": 3, "indexed": 3, "briefs": 0, "campaign_images": 0},
    ]


def test_text_search_finds_the_right_images_of_the_right_drop_with_thumbnails(served):
    server, _, _ = served
    hits = server.get("/api/search", q="a red circle", drop="spring", k=2, kind="product").json()
    assert names(hits) == ["red_circle"] * 2  # spring's two red circles, best first
    assert {h["drop"] for h in hits} == {"spring"} and {h["kind"] for h in hits} == {"product"}
    assert hits[0]["score"] >= hits[1]["score"]
    everywhere = server.get("/api/search", q="a red circle", k=3, kind="product").json()
    assert names(everywhere) == ["red_circle"] * 3 and {h["drop"] for h in everywhere} == {"spring", "summer"}
    thumb = requests.get(server.url + hits[0]["thumbnail"], timeout=60)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(thumb.content))
    assert max(img.size) <= 320 and len(thumb.content) < 60_000  # a grid thumbnail, not the original


def test_campaign_images_are_searchable_and_say_their_kind(served):
    server, _, _ = served
    campaign = server.get("/api/search", q="a campaign board", kind="campaign", k=5).json()
    assert sorted(h["path"] for h in campaign) == ["campaign/blue-shelf.png", "campaign/red-hero.png"]
    assert {(h["kind"], h["drop"]) for h in campaign} == {("campaign", "spring")}
    mixed = server.get("/api/search", q="a red circle", k=40).json()
    assert {h["kind"] for h in mixed} == {"product", "campaign"}
    assert len(mixed) == 24 + 3 + 2  # every row of both collections, since k is larger
    thumb = requests.get(server.url + campaign[0]["thumbnail"], timeout=60)
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).format == "JPEG"


def test_more_like_this_excludes_the_image_itself(served):
    server, _, _ = served
    hits = server.get("/api/similar", drop="spring", path="red_circle_0.png", k=5).json()
    assert len(hits) == 5 and "red_circle_0.png" not in [h["path"] for h in hits if h["drop"] == "spring"]
    assert names(hits)[0] == "red_circle"
    like_board = server.get("/api/similar", drop="spring", path="campaign/red-hero.png", kind="campaign").json()
    assert [h["path"] for h in like_board] == ["campaign/blue-shelf.png"]


def test_drop_page_data_has_briefs_references_campaign_facts_and_sheets(served):
    server, _, _ = served
    d = server.get("/api/drops/spring").json()
    assert [b["id"] for b in d["briefs"]] == ["red-hero", "blue-shelf"]
    assert names(d["briefs"][0]["references"]) == ["red_circle", "red_circle"]
    assert {c["path"]: (c["brief"], c["generator"]) for c in d["campaign"]} == {
        "campaign/blue-shelf.png": ("blue-shelf", "offline-board"), "campaign/red-hero.png": ("red-hero", "offline-board")}
    assert set(d["sheets"]) == {"drop", "references", "campaign"}
    sheet = requests.get(server.url + d["sheets"]["drop"], timeout=60)
    assert sheet.status_code == 200 and Image.open(io.BytesIO(sheet.content)).format == "JPEG"


def test_hits_name_their_product_and_filters_keep_only_what_they_name(served):
    server, _, _ = served
    hits = server.get("/api/search", q="STAR-1", k=3, kind="product").json()
    assert [(h["drop"], h["sku"], h["match"]) for h in hits[:2]] == [("summer", "STAR-1", "sku")] * 2
    assert hits[0]["name"].startswith("Star badge")
    pins = server.get("/api/search", q="a green star", category="pins", k=10).json()
    assert [(h["path"], h["sku"], h["name"]) for h in pins] == [("red_circle_0.png", "DOT-7", "Red dot pin")]
    assert server.get("/api/search", q="a star", color="GREEN", kind="product", k=10).json()[0]["sku"] == "STAR-1"
    assert {h["sku"] for h in server.get("/api/search", q="a star", color="green", k=10).json()} == {"STAR-1"}
    assert server.get("/api/facets").json() == {
        "category": [{"value": "badges", "images": 2}, {"value": "pins", "images": 1}],
        "color": [{"value": "green", "images": 2}, {"value": "red", "images": 1}],
        "sku": [{"value": "DOT-7", "images": 1}, {"value": "STAR-1", "images": 2}]}


def test_each_hit_says_how_like_the_query_its_picture_is_and_why_it_was_found(served):
    """A person reads the similarity (cosine, -1..1) and the reasons, in the fused order; the rank score stays."""
    server, _, _ = served
    by_sku = server.get("/api/search", q="STAR-1", k=4, kind="product").json()
    assert [h["why"] for h in by_sku[:2]] == [["sku"], ["sku"]]
    named = server.get("/api/search", q="star badge", k=27, kind="product").json()
    # Only summer's two star pictures hold the words; every other hit was found by its picture alone.
    worded = {h["path"]: h["words"] for h in named if "words" in h["why"]}
    assert worded == {"green_star_0.png": ["badge", "star"], "green_star_1.png": ["badge", "star"]}
    assert all(h["why"] == ["picture"] and h["words"] == [] for h in named if h["path"] not in worded)
    assert len(named) == 27 and all(-1.0 <= h["similarity"] <= 1.0 for h in named)
    scores = [h["score"] for h in named]
    assert scores == sorted(scores, reverse=True)  # the fused order, its score kept
    # "Picture" says the picture alone would have found it: no picture-only hit is more like the query than
    # a hit with the words that is not called a picture match.
    floor = min(h["similarity"] for h in named if h["why"] == ["picture"])
    assert all(("picture" in h["why"]) == (h["similarity"] >= floor) for h in named if h["path"] in worded)
    # Hits carry the product's category and colour for the page.
    assert {(h["category"], h["color"]) for h in by_sku[:2]} == {("badges", "green")}


def test_an_uploaded_picture_finds_that_product_first_and_is_not_kept(served):
    server, root, _ = served
    picture = (root / "drops" / "summer" / "green_star_1.png").read_bytes()
    files_before = sorted(p for p in root.rglob("*") if p.is_file())
    r = server.post("/api/similar", picture, {"Content-Type": "image/png"}, k=5)
    assert r.status_code == 200, r.text
    hits = r.json()
    assert (hits[0]["drop"], hits[0]["path"], hits[0]["sku"]) == ("summer", "green_star_1.png", "STAR-1")
    assert hits[0]["score"] > 0.99 and {h["kind"] for h in hits} <= {"product", "campaign"}
    assert hits[0]["similarity"] > 0.99 and hits[0]["why"] == ["picture"]  # the picture itself: as like as can be
    only_spring = server.post("/api/similar", picture, drop="spring", kind="product", k=3).json()
    assert {h["drop"] for h in only_spring} == {"spring"}
    assert sorted(p for p in root.rglob("*") if p.is_file() and p.name != "serve.log") == \
        [p for p in files_before if p.name != "serve.log"]  # nothing uploaded is stored


@pytest.mark.parametrize("data, error", [
    (b"", "image: the request body is empty; send the image's bytes"),
    (b"just some text", "image: not an image"),
])
def test_an_upload_that_is_not_a_picture_is_a_400_naming_the_problem(served, data, error):
    server, _, _ = served
    r = server.post("/api/similar", data, {"Content-Type": "image/png"})
    assert r.status_code == 400 and r.json() == {"error": error}


def test_an_upload_over_the_pixel_limit_is_refused(served, tmp_path):
    server, _, _ = served
    buf = io.BytesIO()
    Image.new("RGB", (9000, 8000), "white").save(buf, "PNG")
    r = server.post("/api/similar", buf.getvalue())
    assert r.status_code == 400
    assert r.json() == {"error": "image: 9000x8000 pixels is over the limit of 64000000 pixels"}


def test_a_post_from_another_site_is_refused(served):
    server, root, _ = served
    picture = (root / "drops" / "summer" / "green_star_1.png").read_bytes()
    r = server.post("/api/similar", picture, {"Origin": "https://elsewhere.example", "Content-Type": "image/png"})
    assert r.status_code == 403 and r.json() == {"error": "origin: cross-site requests are refused"}
    same = server.post("/api/similar", picture, {"Origin": server.url, "Content-Type": "image/png"})
    assert same.status_code == 200


@pytest.mark.parametrize("route, params, error", [
    ("/api/search", {"q": ""}, "q: the query is empty"),
    ("/api/search", {"q": "   "}, "q: the query is empty"),
    ("/api/search", {"q": "x" * 301}, "q: the query is 301 characters long; at most 300"),
    ("/api/search", {"q": "red", "k": "0"}, "k: must be from 1 to 100, got 0"),
    ("/api/search", {"q": "red", "k": "101"}, "k: must be from 1 to 100, got 101"),
    ("/api/search", {"q": "red", "k": "ten"}, "k: must be a whole number from 1 to 100, got 'ten'"),
    ("/api/search", {"q": "red", "drop": "winter"}, "drop: no such drop 'winter'"),
    ("/api/search", {"q": "red", "drop": "../etc"}, "drop: no such drop '../etc'"),
    ("/api/search", {"q": "red", "kind": "video"}, "kind: must be all, product or campaign, got 'video'"),
    ("/api/similar", {"drop": "spring"}, "path: missing"),
    ("/api/similar", {"drop": "spring", "path": "nope.png"}, "path: 'nope.png' is not in the index of drop 'spring'"),
    ("/api/similar", {"path": "red_circle_0.png"}, "drop: missing"),
    ("/api/thumbnail", {"drop": "spring", "path": "../summer/red_circle_0.png"},
     "path: '../summer/red_circle_0.png' is not in the index of drop 'spring'"),
    ("/api/thumbnail", {"drop": "spring", "path": "/etc/passwd"}, "path: '/etc/passwd' is not in the index of drop 'spring'"),
    ("/api/thumbnail", {"drop": "spring", "path": "..%2F..%2Fmilvus.db"},
     "path: '..%2F..%2Fmilvus.db' is not in the index of drop 'spring'"),
    ("/api/thumbnail", {"drop": "spring", "path": "manifest.parquet", "kind": "campaign"},
     "path: 'manifest.parquet' is not in the index of drop 'spring'"),
    ("/api/sheet", {"drop": "spring", "name": "../../milvus.db"}, "name: must be one of drop, references, campaign, got '../../milvus.db'"),
    ("/api/sheet", {"drop": "winter", "name": "drop"}, "drop: no such drop 'winter'"),
    ("/api/drops/winter", {}, "drop: no such drop 'winter'"),
    ("/api/search", {"q": "red", "category": 'pi"ns'},
     "category: 'pi\"ns' is not a category a catalog can hold (1-64 letters, digits, spaces or & ' / + . -)"),
    ("/api/search", {"q": "red", "sku": "A B"}, "sku: 'A B' is not a SKU (1-64 letters, digits, '.', '_', '/' or '-')"),
])
def test_bad_arguments_are_400_with_a_one_line_error_naming_the_parameter(served, route, params, error):
    server, _, _ = served
    r = server.get(route, **params)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": error}


def test_no_file_outside_the_index_is_served_and_no_cors(served):
    server, root, _ = served
    # A raw, undecoded path: the server must not undo the encoding into a traversal either.
    r = requests.get(server.url + "/api/thumbnail?drop=spring&path=%2e%2e%2f%2e%2e%2fmilvus.db", timeout=30)
    assert r.status_code == 400 and "not in the index" in r.json()["error"]
    # A file of the index that has since become a link out of the drop.
    target = root / "drops" / "summer" / "green_star_1.png"
    original = target.read_bytes()
    target.unlink()
    target.symlink_to(root / "milvus.db")
    try:
        r = server.get("/api/thumbnail", drop="summer", path="green_star_1.png")
        assert r.status_code == 400
        assert r.json() == {"error": "path: 'green_star_1.png' leaves the folder of drop 'summer'"}
    finally:
        target.unlink()
        target.write_bytes(original)
    assert server.get("/nowhere").status_code == 404
    r = requests.get(server.url + "/api/drops", headers={"Origin": "https://elsewhere.example"}, timeout=30)
    assert r.status_code == 200 and not any(h.lower().startswith("access-control-") for h in r.headers)
    assert requests.options(server.url + "/api/search", headers={
        "Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"}, timeout=30).status_code == 405


def test_a_run_gets_the_milvus_lite_file_while_the_page_keeps_searching(served):
    """serve keeps the Lite file open and shares it: a run works through the page's Milvus while searches go
    on, and every search meanwhile answers."""
    import threading

    server, root, env = served
    answers: list[int] = []
    stop = threading.Event()

    def search_until_stopped():
        with requests.Session() as http:
            while not stop.is_set():
                answers.append(http.get(server.url + "/api/search", params={"q": "a green star"}, timeout=60).status_code)

    searchers = [threading.Thread(target=search_until_stopped) for _ in range(4)]
    for t in searchers:
        t.start()
    try:
        draw_drop(root / "drops" / "summer", spec=[("blue", "square", 1)], seed=3)
        proc = subprocess.run([sys.executable, "-m", "assets_pkg.cli", "run", "--drop", "summer", "--json"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=600)
    finally:
        stop.set()
        for t in searchers:
            t.join()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert answers and set(answers) == {200}
    time.sleep(11)  # the server's cached facts expire
    assert [d["indexed"] for d in server.get("/api/drops").json() if d["drop"] == "summer"] == [4]


def test_a_token_guards_the_api_and_binding_beyond_loopback_needs_one(served, tmp_path):
    _, _, env = served
    proc = subprocess.run([sys.executable, "-m", "assets_pkg.cli", "serve", "--host", "0.0.0.0"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "drop-studio: error: --host 0.0.0.0 reaches beyond this machine: set DROP_STUDIO_TOKEN first (anyone who "
        "can reach the port could search and view every image)"]
    token = "s3cret-" + os.urandom(8).hex()
    guarded = Serve({**env, "DROP_STUDIO_TOKEN": token}, tmp_path / "guarded.log")
    try:
        assert guarded.get("/").status_code == 200  # the page itself holds no data
        assert guarded.get("/api/drops").status_code == 401
        assert requests.get(guarded.url + "/api/drops", headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
        ok = requests.get(guarded.url + "/api/drops", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert ok.status_code == 200 and len(ok.json()) == 2
        s = requests.Session()
        assert s.post(guarded.url + "/api/login", json={"token": "wrong"}, timeout=30).status_code == 401
        assert s.post(guarded.url + "/api/login", json={"token": token}, timeout=30).status_code == 200
        assert s.get(guarded.url + "/api/search", params={"q": "a red circle"}, timeout=60).status_code == 200
    finally:
        guarded.stop()
    assert token not in (tmp_path / "guarded.log").read_text()


def test_the_page_in_a_browser_search_then_more_like_this(served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    server, root, _ = served
    browser = chrome()
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: len(Select(b.find_element(By.ID, "drop")).options) == 3)  # all drops + 2
        Select(browser.find_element(By.ID, "drop")).select_by_value("spring")
        Select(browser.find_element(By.ID, "kind")).select_by_value("product")
        box = browser.find_element(By.ID, "q")
        box.send_keys("a red circle")
        box.submit()
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#results .result")))
        cards = browser.find_elements(By.CSS_SELECTOR, "#results .result")
        assert {c.get_attribute("data-drop") for c in cards} == {"spring"}
        # The header names the model whose collection answered, as the API's header does.
        answered = requests.get(server.url + "/api/search", params={"q": "a red circle"}, timeout=60)
        wait.until(EC.text_to_be_present_in_element((By.ID, "model"), "model: "))
        assert browser.find_element(By.ID, "model").text == f"model: {answered.headers['X-Search-Model']}"
        assert answered.headers["X-Search-Collection"] == "product_images"
        assert cards[0].get_attribute("data-path").startswith("red_circle_")
        # The thumbnails really load (naturalWidth > 0 once decoded), lazily, at grid size.
        first_img = cards[0].find_element(By.TAG_NAME, "img")
        wait.until(lambda b: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", first_img))
        assert first_img.get_attribute("loading") == "lazy"
        assert browser.execute_script("return arguments[0].naturalWidth", first_img) <= 320
        browser.save_screenshot(str(tmp_path / "search.png"))

        clicked = cards[0].get_attribute("data-path")
        cards[0].find_element(By.CSS_SELECTOR, ".more-like-this").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "results-title"), f"More like {clicked}"))
        similar = browser.find_elements(By.CSS_SELECTOR, "#results .result")
        assert similar and clicked not in [c.get_attribute("data-path") for c in similar
                                           if c.get_attribute("data-drop") == "spring"]
        browser.save_screenshot(str(tmp_path / "more-like-this.png"))

        spring_card = next(c for c in similar if c.get_attribute("data-drop") == "spring")
        spring_card.find_element(By.CSS_SELECTOR, ".drop-link").click()
        wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#drop-view .campaign-image")))
        assert len(browser.find_elements(By.CSS_SELECTOR, "#drop-view .campaign-image")) == 2
        browser.save_screenshot(str(tmp_path / "drop.png"))
        assert Image.open(tmp_path / "drop.png").size[0] > 0

        # Filter controls, filled from the catalogs: a category keeps only its products.
        wait.until(lambda b: len(Select(b.find_element(By.ID, "category")).options) == 3)
        Select(browser.find_element(By.ID, "drop")).select_by_value("")
        Select(browser.find_element(By.ID, "category")).select_by_value("badges")
        box = browser.find_element(By.ID, "q")
        box.clear()
        box.send_keys("a red circle")
        box.submit()
        wait.until(EC.text_to_be_present_in_element((By.ID, "results-title"), "Results for"))
        wait.until(lambda b: {c.get_attribute("data-sku") for c in b.find_elements(By.CSS_SELECTOR, "#results .result")}
                   == {"STAR-1"})
        product = browser.find_element(By.CSS_SELECTOR, "#results .result .product").text
        assert "STAR-1 · Star badge" in product and "badges, green" in product  # SKU, name, category, colour
        browser.save_screenshot(str(tmp_path / "filtered.png"))

        # The search is in the URL: a link opened elsewhere, a reload, back and forward show the same results.
        shown = lambda b: [(c.get_attribute("data-drop"), c.get_attribute("data-path"))  # noqa: E731
                           for c in b.find_elements(By.CSS_SELECTOR, "#results .result")]
        filtered, link = shown(browser), browser.current_url
        assert "#/search?" in link and "category=badges" in link and "q=a+red+circle" in link
        other = chrome()
        try:
            other.get(link)
            WebDriverWait(other, 60).until(lambda b: shown(b) == filtered)
            assert other.find_element(By.ID, "q").get_attribute("value") == "a red circle"
            assert Select(other.find_element(By.ID, "category")).first_selected_option.get_attribute("value") == "badges"
        finally:
            other.quit()
        browser.refresh()
        wait.until(lambda b: shown(b) == filtered)
        browser.back()  # to the drop's page, then forward to the search again
        wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#drop-view .campaign-image")))
        browser.forward()
        wait.until(lambda b: b.find_element(By.ID, "search-view").is_displayed() and shown(b) == filtered)
        Select(browser.find_element(By.ID, "category")).select_by_value("")

        # Search by picture: choose a file, see that product first.
        browser.find_element(By.ID, "picture").send_keys(str(root / "drops" / "summer" / "red_circle_0.png"))
        wait.until(EC.text_to_be_present_in_element((By.ID, "results-title"), "Like your picture red_circle_0.png"))
        first = browser.find_elements(By.CSS_SELECTOR, "#results .result")[0]
        assert (first.get_attribute("data-drop"), first.get_attribute("data-path"), first.get_attribute("data-sku")) \
            == ("summer", "red_circle_0.png", "DOT-7")
        browser.save_screenshot(str(tmp_path / "by-picture.png"))
        assert browser.current_url.endswith("#/picture")  # not a link to anything: the picture stayed here
        browser.refresh()
        wait.until(EC.text_to_be_present_in_element((By.ID, "message"), "cannot be linked"))
    finally:
        browser.quit()
