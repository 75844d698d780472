"""Duplicates in the archive: pictures of the same shot found by a perceptual hash (imagehash) through
copies, JPEG re-encodes, small crops and resizes, beside distinct pictures (public-domain clip art from the
sample drops); nothing deleted, and search showing one picture of a group unless asked for all."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from conftest import ROOT, materialize_drop, metadata

SAMPLES = ROOT / "data" / "drops"
SHOTS = ["drinkware/a_teapot_01.png", "fruit-stand/bananas_nicu_buculei_01.png",
         "sports-gear/dartboard_ruud_steltenpo_01.png"]
DISTINCT = ["drinkware/wine.png", "fruit-stand/cherries.png", "sports-gear/golf_ganson.png"]


def _on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def build_archive(folder) -> list[list[str]]:
    """Each shot as itself, an exact copy, a JPEG at quality 60, a centred and a corner 90% crop, and a
    half-size copy; the distinct pictures once each. Returns the groups it built."""
    folder.mkdir(parents=True)
    groups = []
    for n, rel in enumerate(SHOTS):
        src = SAMPLES / rel
        im = Image.open(src)
        w, h = im.size
        names = [f"shot{n}.png", f"shot{n}-copy.png", f"shot{n}-q60.jpg", f"shot{n}-crop.png",
                 f"shot{n}-corner.png", f"shot{n}-half.png"]
        shutil.copy(src, folder / names[0])
        shutil.copy(src, folder / names[1])
        _on_white(im).save(folder / names[2], "JPEG", quality=60)
        im.crop((int(w * .05), int(h * .05), int(w * .95), int(h * .95))).save(folder / names[3])
        im.crop((0, 0, int(w * .9), int(h * .9))).save(folder / names[4])
        im.resize((w // 2, h // 2), Image.LANCZOS).save(folder / names[5])
        groups.append(sorted(names))
    for n, rel in enumerate(DISTINCT):
        shutil.copy(SAMPLES / rel, folder / f"distinct{n}.png")
    return sorted(groups)


def _groups(table) -> list[list[str]]:
    found: dict[int, list[str]] = {}
    for r in table.records:
        found.setdefault(r.data["group"], []).append(r.data["path"])
    return sorted(sorted(g) for g in found.values())


def test_the_same_shot_is_found_through_copies_reencodes_crops_and_resizes_and_nothing_else_is(studio):
    groups = build_archive(studio.drops / "archive")
    result = materialize_drop("archive")
    assert result.success
    facts = metadata(result, "product_duplicates")
    assert _groups(facts["same_shot"]) == groups  # exactly the groups built: no distinct picture in one
    assert (facts["same_shot_groups"], facts["pictures_in_same_shot_groups"], facts["blank"]) == (3, 18, [])
    assert facts["hashed"] == 3 * 5 + 3  # every distinct content once (an exact copy is the same bytes)
    assert len(list((studio.drops / "archive").iterdir())) == 21  # nothing deleted
    grouped = {p for g in groups for p in g[1:]}
    for g in _groups(facts["near_identical"]):  # one picture per shot compared by vector
        assert not grouped & set(g)

    again = metadata(materialize_drop("archive"), "product_duplicates")
    assert again["hashed"] == 0 and _groups(again["same_shot"]) == groups
    # A new re-encode of a shot joins its group; only it is read and hashed.
    _on_white(Image.open(studio.drops / "archive" / "shot1.png")).save(studio.drops / "archive" / "shot1-q90.jpg",
                                                                            "JPEG", quality=90)
    more = metadata(materialize_drop("archive"), "product_duplicates")
    assert more["hashed"] == 1 and sorted(groups[1] + ["shot1-q90.jpg"]) in _groups(more["same_shot"])


def test_search_shows_one_picture_of_a_same_shot_group_unless_asked_for_all(studio):
    groups = build_archive(studio.drops / "archive")
    assert materialize_drop("archive").success
    search = lambda *extra: [h["path"].rsplit("/", 1)[-1] for h in json.loads(studio.cli(
        "search", "a picture", "--drop", "archive", "--top-k", "30", "--json", *extra).stdout)]
    one, every = search(), search("--all")
    # Every content is a row (an exact copy is an alias of its row): 15 rows of shots, 3 distinct.
    assert len(every) == 18 and len(one) == 3 + 3
    for g in groups:
        assert len(set(one) & set(g)) == 1 and len(set(every) & set(g)) == 5
    assert {f"distinct{n}.png" for n in range(3)} <= set(one)


@pytest.mark.services
def test_the_api_collapses_unless_asked_and_the_drops_page_shows_the_groups(studio):
    import os

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from servers import Serve, chrome

    groups = build_archive(studio.drops / "archive")
    assert materialize_drop("archive").success
    with Serve({**os.environ, **studio.env}, studio.root / "serve.log") as server:
        found = lambda **extra: [h["path"] for h in server.get("/api/search", q="a picture", drop="archive", k=30,
                                                                **extra).json()]
        one, every = found(), found(collapse="false")
        assert len(every) == 18 and len(one) == 6
        assert all(len(set(one) & set(g)) == 1 for g in groups)
        bad = server.get("/api/search", q="a picture", collapse="maybe")
        assert bad.status_code == 400 and bad.json()["error"] == "collapse: must be true or false, got 'maybe'"
        detail = server.get("/api/drops/archive").json()["duplicates"]
        assert sorted(sorted(p["path"] for p in g) for g in detail["same_shot"]) == groups
        browser = chrome()
        try:
            browser.get(server.url + "/#/drop/archive")
            wait = WebDriverWait(browser, 120)
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".duplicates.same_shot")) == 3)
            shown = sorted(sorted(f.text for f in g.find_elements(By.TAG_NAME, "figcaption"))
                           for g in browser.find_elements(By.CSS_SELECTOR, ".duplicates.same_shot"))
            assert shown == groups
        finally:
            browser.quit()
