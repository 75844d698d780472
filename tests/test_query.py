"""The searches photo-search users keep asking for, with the same names in the CLI, the API and the page: a
negative term (`-floral`, `--not`, `not=`), a minimum similarity, and a picture with words ("this bag, in
black"). Real CLIP (the repo's tiny checkpoint), real Milvus Lite, the real server and Chromium."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from assets_pkg.domain.query import InvalidQuery, parse_query
from conftest import draw_drop, materialize_drop

COLOURS = ("red", "blue", "green", "yellow")


def _drop(studio) -> dict[str, str]:
    """The shapes drop under neutral file names (item_NN.png) with a catalog: file -> colour. One blue
    square is named "Floral pin"."""
    raw = studio.root / "raw"
    names = draw_drop(raw)
    folder = studio.drops / "spring"
    folder.mkdir()
    colour, rows = {}, ["file,sku,name,category,color"]
    for n, name in enumerate(names):
        file = f"item_{n:02d}.png"
        shutil.copy(raw / name, folder / file)
        colour[file] = name.split("_")[0]
        title = "Floral pin" if name == "blue_square_0.png" else f"Pin {n:02d}"
        rows.append(f"{file},SKU-{n:02d},{title},Pins,{colour[file].title()}")
    (folder / "products.csv").write_text("\n".join(rows) + "\n")
    assert materialize_drop("spring").success
    return colour


def _cli(studio, *args) -> list[dict]:
    out = json.loads(studio.cli("search", *args, "--drop", "spring", "--top-k", "30", "--json").stdout)
    for h in out:
        h["file"] = h["path"].rsplit("/", 1)[-1]
    return out


def test_query_terms_parse_into_words_negatives_and_a_floor_or_one_line():
    q = parse_query("red dress -floral", ["stripes, lace"], "0.25")
    assert (q.words, q.negatives, q.min_similarity) == ("red dress", ("floral", "stripes", "lace"), 0.25)
    for args, line in [(("-floral",), "q: say what to find, not only what to leave out"),
                       (("dress", (), "high"), "min_similarity: a cosine similarity from -1 to 1, got 'high'"),
                       (("dress", (), "2"), "min_similarity: a cosine similarity from -1 to 1, got '2'"),
                       (("dress", [f"w{i}" for i in range(9)]), "not: at most 8 terms to push out, got 9")]:
        with pytest.raises(InvalidQuery) as e:
            parse_query(*args)
        assert str(e.value) == line
    assert parse_query("", (), None, with_picture=True).words == ""  # a picture alone is a query


def test_in_the_cli_a_negative_term_a_floor_and_a_picture_with_words(studio):
    colour = _drop(studio)
    plain = _cli(studio, "a circle")
    assert any(colour[h["file"]] == "red" for h in plain)
    pushed = _cli(studio, "a circle", "--not", "red")
    # The red pictures are out (their colour is the term), and what stays keeps its order.
    assert pushed and all(colour[h["file"]] != "red" for h in pushed)
    order = [h["file"] for h in plain]
    assert [h["file"] for h in pushed] == [f for f in order if f in {h["file"] for h in pushed}]
    # Written in the query: the picture named "Floral pin" is pushed out.
    assert "Floral pin" in {h["name"] for h in _cli(studio, "a pin")}
    assert "Floral pin" not in {h["name"] for h in _cli(studio, "a pin -floral")}
    # A floor: exactly the plain results at or above it.
    ranked = sorted(h["similarity"] for h in plain)
    floor = (ranked[len(ranked) // 2] + ranked[len(ranked) // 2 + 1]) / 2  # between two results
    above = _cli(studio, "a circle", "--min-similarity", str(floor))
    assert [h["file"] for h in above] == [h["file"] for h in plain if h["similarity"] >= floor]
    # A picture alone finds itself first; with the word "blue", blue pictures come first.
    red = next(f for f, c in colour.items() if c == "red")
    alone = _cli(studio, "--picture", str(studio.drops / "spring" / red))
    assert alone[0]["file"] == red and alone[0]["similarity"] > 0.99
    with_words = _cli(studio, "blue", "--picture", str(studio.drops / "spring" / red))
    assert colour[with_words[0]["file"]] == "blue"
    bad = studio.cli("search", "--", "-red", check=False)  # click reads a leading "-" as an option otherwise
    assert bad.returncode != 0 and "QUERY: say what to find, not only what to leave out" in bad.stderr


@pytest.mark.services
def test_in_the_api_and_on_the_page_with_the_same_names(studio):
    import requests
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from servers import Serve, chrome

    colour = _drop(studio)
    with Serve({**os.environ, **studio.env}, studio.root / "serve.log") as server:
        files = lambda hits: [h["path"] for h in hits]
        plain = server.get("/api/search", q="a circle", drop="spring", k=30, kind="product").json()
        pushed = server.get("/api/search", q="a circle", drop="spring", k=30, kind="product", **{"not": "red"}).json()
        assert pushed and all(colour[p] != "red" for p in files(pushed))
        assert files(pushed) == [p for p in files(plain) if p in set(files(pushed))]
        ranked = sorted(h["similarity"] for h in plain)
        floor = (ranked[len(ranked) // 2] + ranked[len(ranked) // 2 + 1]) / 2
        above = server.get("/api/search", q="a circle", drop="spring", k=30, kind="product", min_similarity=floor).json()
        assert files(above) == [h["path"] for h in plain if h["similarity"] >= floor]
        bad = server.get("/api/search", q="a circle", min_similarity="high")
        assert bad.status_code == 400 and bad.json()["error"] == "min_similarity: a cosine similarity from -1 to 1, got 'high'"
        red = next(f for f, c in colour.items() if c == "red")
        picture = (studio.drops / "spring" / red).read_bytes()
        both = requests.post(server.url + "/api/similar", params={"drop": "spring", "q": "blue", "kind": "product"},
                             data=picture, timeout=60).json()
        assert colour[both[0]["path"]] == "blue"

        browser = chrome()
        try:
            browser.get(server.url + "/#/")
            wait = WebDriverWait(browser, 120)
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#drop option[value='spring']"))
            browser.find_element(By.ID, "q").send_keys("a circle")
            browser.find_element(By.ID, "not").send_keys("red")
            browser.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
            wait.until(lambda b: "not=red" in b.current_url and b.find_elements(By.CSS_SELECTOR, "article.result"))
            shown = [c.get_attribute("data-path") for c in browser.find_elements(By.CSS_SELECTOR, "article.result")
                     if c.get_attribute("data-kind") == "product"]
            assert shown and all(colour[p] != "red" for p in shown)
            browser.refresh()  # the link holds the negative term
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "article.result"))
            assert browser.find_element(By.ID, "not").get_attribute("value") == "red"
        finally:
            browser.quit()
