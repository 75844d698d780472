"""The searches photo-search users keep asking for, with the same names in the CLI, the API and the page: a
negative term (`-floral`, `--not`, `not=`), a minimum similarity, a picture with words ("this bag, in
black"), and the results by date added (`--sort added`, `sort=added`). Real CLIP (the repo's tiny
checkpoint), real Milvus Lite, the real server and Chromium."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from assets_pkg.domain.listing import as_iso
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


ADDED = 1_700_000_000  # 2023-11-14: the drop's files are dated a day apart, in no order of name or colour


def _date_files(studio, colour: dict[str, str]) -> dict[str, str]:
    """Each file of the drop added on its own day (its modification time); file -> that time as the hits say it."""
    added = {}
    for n, file in enumerate(sorted(colour)):
        t = ADDED + ((n * 7) % len(colour)) * 86400
        os.utime(studio.drops / "spring" / file, (t, t))
        added[file] = as_iso(t)
    return added


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
                       (("dress", [f"w{i}" for i in range(9)]), "not: at most 8 terms to push out, got 9"),
                       (("dress", (), None, False, "date"), "sort: relevance or added, got 'date'")]:
        with pytest.raises(InvalidQuery) as e:
            parse_query(*args)
        assert str(e.value) == line
    assert parse_query("", (), None, with_picture=True).words == ""  # a picture alone is a query
    assert (parse_query("dress").sort, parse_query("dress", sort="added").sort) == ("relevance", "added")


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
    # By date added: the same results, the file added last first, each with its date.
    added = _date_files(studio, colour)
    newest = _cli(studio, "a circle", "--sort", "added")
    assert sorted(h["file"] for h in newest) == sorted(h["file"] for h in plain)
    assert [h["added"] for h in newest] == sorted((added[h["file"]] for h in plain), reverse=True)
    assert all(h["added"] == added[h["file"]] for h in newest)
    bad = studio.cli("search", "a circle", "--sort", "date", check=False)
    assert bad.returncode != 0 and "--sort" in bad.stderr and "'date' is not one of 'relevance', 'added'" in bad.stderr


@pytest.mark.services
def test_in_the_api_and_on_the_page_with_the_same_names(studio):
    import requests
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

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
        added = _date_files(studio, colour)
        newest = server.get("/api/search", q="a circle", drop="spring", k=30, kind="product", sort="added").json()
        assert sorted(files(newest)) == sorted(files(plain))
        assert [h["added"] for h in newest] == sorted((added[p] for p in files(plain)), reverse=True)
        assert all(h["added"] == added[h["path"]] for h in newest)
        bad = server.get("/api/search", q="a circle", sort="date")
        assert bad.status_code == 400 and bad.json()["error"] == "sort: relevance or added, got 'date'"

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
            # Newest added first: the cards in the API's order, each with its date; the link holds the order.
            browser.find_element(By.ID, "not").clear()
            Select(browser.find_element(By.ID, "sort")).select_by_value("added")
            browser.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
            wait.until(lambda b: "sort=added" in b.current_url and "not=" not in b.current_url)
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "article.result .added"))
            cards = [c for c in browser.find_elements(By.CSS_SELECTOR, "article.result")
                     if c.get_attribute("data-kind") == "product"]
            newest24 = server.get("/api/search", q="a circle", k=24, sort="added").json()
            assert [c.get_attribute("data-path") for c in cards] == [h["path"] for h in newest24 if h["kind"] == "product"]
            first = cards[0].find_element(By.CSS_SELECTOR, ".added").text
            assert first == f"added {added[cards[0].get_attribute('data-path')][:16].replace('T', ' ')} UTC"
            browser.refresh()
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "article.result .added"))
            assert browser.find_element(By.ID, "sort").get_attribute("value") == "added"
        finally:
            browser.quit()


def test_a_query_asked_again_answers_exactly_as_the_first_time_from_its_kept_vector(studio):
    import numpy as np

    from assets_pkg.resources import ClipModel, MilvusResource
    from assets_pkg.web.server import build_service

    draw_drop(studio.drops / "spring", spec=[("red", "circle", 2), ("blue", "square", 2)])
    assert materialize_drop("spring").success
    service = build_service(MilvusResource(), ClipModel())
    try:
        model = service.model()
        first, _ = service.search(parse_query("a red circle -square"), "spring", 4)
        kept = dict(service._text_vectors)
        assert sorted(kept) == [(model.id, "a red circle"), (model.id, "square")]  # per model, per words
        again, _ = service.search(parse_query("a red circle -square"), "spring", 4)
        assert [(h.path, h.score, h.similarity) for h in again] == [(h.path, h.score, h.similarity) for h in first]
        fresh = service.encoder(model).embed_texts(["a red circle"])[0]
        assert np.array_equal(service.text_vectors(model, ["a red circle"])[0], fresh)
    finally:
        service.close()
