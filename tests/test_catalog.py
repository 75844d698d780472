"""Products, not just pixels: a drop's products.csv, its rows in Milvus, keyword + CLIP search with filters,
briefs that name products, and the upgrade of a world made by the previous release."""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from assets_pkg.domain.products import file_words
from assets_pkg.stages.catalog.logic import CatalogError, parse_catalog
from assets_pkg.domain.milvus import campaign_uri
from assets_pkg.domain.store import ImageCollection, ProductImageStore
from assets_pkg.domain.store.rows import SPARSE
from conftest import BRIEFS, ROOT, draw_drop, forked_cli
from fake_gemini import FakeGemini

SPEC = [("red", "circle", 2), ("blue", "square", 2), ("green", "triangle", 2)]
FILES = [f"{c}_{s}_{k}.png" for c, s, n in SPEC for k in range(n)]

# Lines 5-8 are bad, each for its own reason; the other rows go on.
PRODUCTS = """file,sku,name,category,color,tags,season
red_circle_0.png,SKU-4471,Sun disc,Hats,Red,summer;beach,SS25
red_circle_1.png,SKU-4471,Sun disc (back),Hats,Red,summer,SS25
blue_square_0.png,SKU-2002,Pool tile,Footwear,Blue,,SS25
nowhere.png,SKU-9,Ghost,Hats,,,
blue_square_0.png,SKU-2003,Listed twice,Footwear,,,
green_triangle_0.png,,No SKU,Tents,,,
green_triangle_1.png,SKU-3003,Alpine tent,Tents,Green,,AW25,one too many
blue_square_1.png,SKU-2002,Pool tile (back),Footwear,Blue,,
"""

REJECTED = [
    {"line": 5, "file": "nowhere.png", "reason": "file 'nowhere.png' is not an image of this drop"},
    {"line": 6, "file": "blue_square_0.png", "reason": "file 'blue_square_0.png' is listed twice (first on line 4)"},
    {"line": 7, "file": "green_triangle_0.png", "reason": "the sku is empty"},
    {"line": 8, "file": "green_triangle_1.png", "reason": "8 values, but the header has 7 columns"},
]


def test_catalog_rows_are_validated_one_by_one_with_their_line():
    text = ('file,sku,name,category,color\n'
            'a.png,SKU-1,"A name that\nspans two lines",Hats,Red\n'  # lines 2-3
            'b.png,SKU 2,Bad sku,Hats,Red\n'  # line 4
            'c.png,SKU-3,Quote,"Ha""ts",Red\n'  # line 5
            '\n'  # a blank line is skipped
            'd.png,SKU-4,' + "x" * 201 + ',Hats,Red\n'  # line 7
            'broken.png,SKU-5,Broken,Hats,Red\n'  # line 8: the scan rejected it
            'e.png,SKU-6,Fine,  Foot   Wear ,BLUE\n')  # line 9
    catalog = parse_catalog(text, ["a.png", "b.png", "c.png", "d.png", "e.png"], {"broken.png": "not an image"})
    assert [(r["line"], r["file"]) for r in catalog.rejected] == [(4, "b.png"), (5, "c.png"), (7, "d.png"),
                                                                  (8, "broken.png")]
    reasons = [r["reason"] for r in catalog.rejected]
    assert reasons[0].startswith("sku 'SKU 2' must be 1-64 letters")
    assert reasons[1].startswith("category 'Ha\"ts': each value must be")
    assert reasons[2] == "name is 201 characters long; at most 200"
    assert reasons[3] == "file 'broken.png' was rejected by the scan (not an image)"
    assert list(catalog.products) == ["a.png", "e.png"]
    assert catalog.products["a.png"].name == "A name that\nspans two lines"
    assert (catalog.products["e.png"].category, catalog.products["e.png"].color) == ("foot wear", "blue")


@pytest.mark.parametrize("data, error", [
    (b"sku,name\nSKU-1,x\n", "products.csv:1: no 'file' column in the header (found: sku, name)"),
    (b"", "products.csv: empty file (expected a header line with a 'file' column)"),
    (b"file,sku,sku\na.png,1,2\n", "products.csv:1: column(s) sku appear twice"),
])
def test_a_catalog_that_cannot_be_read_is_one_line_naming_the_file(data, error):
    with pytest.raises(CatalogError) as e:
        parse_catalog(data.decode(), ["a.png"], {})
    assert str(e.value) == error


def test_file_names_become_words_for_full_text_search():
    assert file_words("Summer/an_apple-01.PNG") == "summer an apple 01"
    assert file_words("straw hat (front).jpg") == "straw hat front"
    assert file_words("SKU4471_topView.webp") == "sku 4471 top view"


def test_editing_the_catalog_alone_changes_the_drop_fingerprint_the_sensor_watches(tmp_path):
    from assets_pkg.domain.drops import ProductDrop, drop_fingerprint

    drop = ProductDrop("spring", tmp_path / "spring")
    draw_drop(drop.folder, spec=SPEC)
    before = drop_fingerprint(drop)
    (drop.folder / "products.csv").write_text(PRODUCTS)
    listed = drop_fingerprint(drop)
    (drop.folder / "products.csv").write_text(PRODUCTS.replace("Sun disc", "Sun hat"))
    assert len({before, listed, drop_fingerprint(drop)}) == 3


def _rows(studio, drop: str) -> dict[str, tuple]:
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:
        found = store.client.query(store.collection, filter=f'drop == "{drop}"',
                                   output_fields=["path", "sku", "name", "category", "color", "tags", "attributes"])
    return {r["path"]: (r["sku"], r["name"], r["category"], r["color"], json.loads(r["tags"]),
                        json.loads(r["attributes"])) for r in found}


def _search(studio, query: str, k: int, **where) -> list[dict]:
    """What `drop-studio search` answers (the CLI's own path is checked once below), without paying a
    process and the model's import for each query."""
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:
        hits = store.search(_encoder(studio).embed_texts([query]), top_k=k, texts=[query], where=where)[0]
    return [{"path": h.path, "sku": h.sku, "name": h.name, "match": h.match} for h in hits]


@functools.cache
def _encoder_for(model: str):
    from assets_pkg.domain.encoder import ClipEncoder

    return ClipEncoder(model)


def _encoder(studio):
    return _encoder_for(studio.env["CLIP_MODEL"])


def test_a_drop_with_a_catalog_gives_exact_product_fields_rejections_search_and_filters(studio):
    draw_drop(studio.drops / "spring", spec=SPEC)
    (studio.drops / "spring" / "products.csv").write_text(PRODUCTS)
    [s] = studio.run_json()
    assert s["ok"] and s["catalog_rejected"] == REJECTED and s["products"] == 2
    assert (s["encoded"], s["indexed"]) == (6, 6)
    assert _rows(studio, "spring") == {
        "red_circle_0.png": ("SKU-4471", "Sun disc", "hats", "red", ["summer", "beach"], {"season": "SS25"}),
        "red_circle_1.png": ("SKU-4471", "Sun disc (back)", "hats", "red", ["summer"], {"season": "SS25"}),
        "blue_square_0.png": ("SKU-2002", "Pool tile", "footwear", "blue", [], {"season": "SS25"}),
        "blue_square_1.png": ("SKU-2002", "Pool tile (back)", "footwear", "blue", [], {}),
        "green_triangle_0.png": ("", "", "", "", [], {}),  # its row was rejected: known by its name alone
        "green_triangle_1.png": ("", "", "", "", [], {}),
    }

    # An exact SKU query returns that product's images first, whatever CLIP thinks of the words.
    hits = json.loads(studio.cli("search", "SKU-2002", "--top-k", "4", "--json").stdout)
    assert sorted((Path(h["path"]).name, h["sku"], h["match"]) for h in hits[:2]) == [
        ("blue_square_0.png", "SKU-2002", "sku"), ("blue_square_1.png", "SKU-2002", "sku")]
    assert hits[0]["name"].startswith("Pool tile") and len(hits) == 4
    assert _search(studio, "sku-2002", 2)[0]["sku"] == "SKU-2002"  # in lower case too
    # A product's name finds it (BM25 over the catalog's text), and a filter keeps only its category.
    assert {h["sku"] for h in _search(studio, "pool tile", 2)} == {"SKU-2002"}
    in_footwear = _search(studio, "a red circle", 10, category="Footwear")
    assert sorted(Path(h["path"]).name for h in in_footwear) == ["blue_square_0.png", "blue_square_1.png"]
    assert {h["sku"] for h in _search(studio, "summer", 10, color="red")} == {"SKU-4471"}
    assert _search(studio, "a red circle", 10, sku="SKU-2002", category="hats") == []
    bad = studio.cli("search", "x", "--category", 'Ha"ts', check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "drop-studio: error: --category: 'Ha\"ts' is not a category a catalog can hold (1-64 letters, digits, "
        "spaces or & ' / + . -)"]

    # Editing only the catalog re-encodes nothing and rewrites exactly the rows whose product data changed.
    edited = PRODUCTS.replace("Pool tile (back)", "Pool tile - back view").replace(
        "green_triangle_1.png,SKU-3003,Alpine tent,Tents,Green,,AW25,one too many",
        "green_triangle_1.png,SKU-3003,Alpine tent,Tents,Green,,AW25")
    (studio.drops / "spring" / "products.csv").write_text(edited)
    [s] = studio.run_json()
    assert (s["encoded"], s["reused"], s["upserted"], s["products"]) == (0, 6, 2, 3)
    assert s["catalog_rejected"] == REJECTED[:3]
    rows = _rows(studio, "spring")
    assert rows["blue_square_1.png"][1] == "Pool tile - back view" and rows["green_triangle_1.png"][0] == "SKU-3003"
    assert rows["red_circle_0.png"][0] == "SKU-4471"


def test_an_unreadable_catalog_fails_its_step_in_one_line_and_the_rows_wait_for_it(studio):
    draw_drop(studio.drops / "spring", spec=SPEC)
    csv = studio.drops / "spring" / "products.csv"
    csv.write_text("sku,name\nSKU-1,Sun disc\n")
    proc = studio.cli("run", "--json", check=False)
    [s] = json.loads(proc.stdout)
    assert proc.returncode == 1 and not s["ok"]
    assert s["error"] == f"product_catalog: {csv}:1: no 'file' column in the header (found: sku, name)"
    assert proc.stderr.strip().splitlines()[-1] == f"drop-studio: spring: {s['error']}"
    assert s["encoded"] == 6 and s["indexed"] is None  # embedded; indexed once the catalog reads
    csv.write_bytes("file,sku,name\nred_circle_0.png,SKU-1,Caf\xe9\n".encode("latin-1"))
    [s] = json.loads(studio.cli("run", "--json", check=False).stdout)
    assert s["error"] == f"product_catalog: {csv}:2: not UTF-8 text (byte 0xe9); save the file as UTF-8 CSV"
    csv.write_text("file,sku,name\nred_circle_0.png,SKU-1,Café\n")
    [s] = studio.run_json()
    assert s["ok"] and (s["encoded"], s["indexed"], s["products"]) == (0, 6, 1)


def _sent_images(request: dict) -> list[tuple[int, int, int]]:
    """The middle pixel of each image a generateContent request carried, in order."""
    out = []
    for part in request["body"]["contents"][0]["parts"]:
        if "inlineData" in part:
            data = part["inlineData"]["data"]
            with Image.open(io.BytesIO(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))) as im:
                out.append(im.convert("RGB").getpixel((im.width // 2, im.height // 2)))
    return out


def _colour(rgb) -> str:
    r, g, b = rgb
    return "red" if r > 150 and g < 100 else "blue" if b > 150 and r < 100 else "green" if g > 120 else "?"


NAMED = """briefs:
  - id: poolside
    prompt: A model wears these on the beach
    products: [SKU-2002, SKU-4471]
    query: a green triangle
    top_k: 1
"""


def test_a_brief_that_names_products_sends_exactly_their_images_in_order(studio, monkeypatch):
    draw_drop(studio.drops / "spring", spec=SPEC, briefs=NAMED)
    (studio.drops / "spring" / "products.csv").write_text(PRODUCTS)
    with FakeGemini() as gemini:
        env = {"GEMINI_API_KEY": "test-key-0123", "GOOGLE_GEMINI_BASE_URL": gemini.url}
        [s] = studio.run_json(extra_env=env)
        assert s["ok"], s["error"]
        [request] = gemini.requests
        # SKU-2002's two pictures, then SKU-4471's two, in the catalog's order, then one searched picture.
        assert [_colour(p) for p in _sent_images(request)] == ["blue", "blue", "red", "red", "green"]
        refs = json.loads((studio.artifacts / "spring" / "references.json").read_text())["poolside"]
        assert [(r["path"], r["via"], r["sku"]) for r in refs[:4]] == [
            ("blue_square_0.png", "sku", "SKU-2002"), ("blue_square_1.png", "sku", "SKU-2002"),
            ("red_circle_0.png", "sku", "SKU-4471"), ("red_circle_1.png", "sku", "SKU-4471")]
        assert refs[4]["via"] == "search" and refs[4]["path"].startswith("green_triangle_")
        sidecar = json.loads((studio.artifacts / "spring" / "campaign" / "poolside.json").read_text())
        assert [(r["sku"], r["name"]) for r in sidecar["references"][:2]] == [("SKU-2002", "Pool tile"),
                                                                              ("SKU-2002", "Pool tile (back)")]

        # An unknown SKU fails campaign_briefs in one line, before anything is searched or billed.
        (studio.drops / "spring" / "briefs.yaml").write_text(NAMED.replace("SKU-4471", "SKU-0000"))
        proc = studio.cli("run", "--json", check=False, extra_env=env)
        [s] = json.loads(proc.stdout)
        assert proc.returncode == 1 and not s["ok"]
        assert s["error"] == (f"campaign_briefs: {studio.drops / 'spring' / 'briefs.yaml'}: brief 'poolside': "
                              f"unknown SKU 'SKU-0000' (products.csv lists 2 SKUs)")
        assert len(gemini.requests) == 1  # nothing more was billed
        assert s["indexed"] == 6  # the drop's images are still indexed


# The release before product catalogs: a world it made must upgrade without encoding or billing anything.
PREVIOUS_RELEASE = "9193d0030a40f890a32a7a545cd2c6406419262d"
# The release with product catalogs, before stages became folders with one record each.
CATALOG_RELEASE = "f20969092a7b714d2f7a2b1d4d5d51aaa607ea58"


def _previous_release(tmp_path: Path, commit: str = PREVIOUS_RELEASE) -> Path:
    old = tmp_path / f"release-{commit[:7]}"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True)
    assert archive.returncode == 0, (f"the upgrade test needs the git history of this repository (commit "
                                     f"{commit}): {archive.stderr.decode()[:300]}")
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    return old


def _run(code: Path, env: dict, *args: str) -> list[dict]:
    # Releases before the click CLI had it in orchestration/.
    cli = "assets_pkg.cli" if (code / "assets_pkg" / "cli").is_dir() else "orchestration.cli"
    if code != ROOT:  # earlier releases named their Milvus MILVUS_URI
        env = {**env, "MILVUS_URI": env["DROP_STUDIO_MILVUS_URI"]}
    proc = forked_cli().run(["run", "--json", *args], {**env, "PYTHONPATH": str(code)}, 600, cwd=code, module=cli)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_a_world_made_by_the_previous_release_upgrades_with_nothing_encoded_or_billed(studio, tmp_path):
    old = _previous_release(tmp_path)
    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    with FakeGemini() as gemini:
        env = {**os.environ, **studio.env, "GEMINI_API_KEY": "test-key-0123", "GOOGLE_GEMINI_BASE_URL": gemini.url}
        [before] = _run(old, env)
        assert before["ok"] and before["encoded"] == 24 and len(gemini.requests) == 2
        art = studio.artifacts / "spring"
        pngs = {p.name: p.read_bytes() for p in (art / "campaign").glob("*.png")}
        refs = (art / "references.json").read_text()
        embeddings = (art / "embeddings.parquet").stat().st_mtime_ns
        with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:
            assert "sku" not in store._fields()  # the previous schema

        [after] = _run(ROOT, env)
        assert after["ok"], after["error"]
        assert (after["encoded"], after["reused"], after["indexed"]) == (0, 24, 24)
        assert len(gemini.requests) == 2  # no campaign image requested again
        assert {p.name: p.read_bytes() for p in (art / "campaign").glob("*.png")} == pngs
        assert (art / "references.json").read_text() == refs  # kept, not searched again
        assert (art / "embeddings.parquet").stat().st_mtime_ns == embeddings
        sidecar = json.loads((art / "campaign" / "red-hero.json").read_text())
        assert sidecar["request"]["prompt"] == "A red product on a sunny beach"  # adopted under the new key
        # Each upgrade step ran once for the drop and says so; the next run asks none of them again.
        assert set(json.loads((art / "upgrade.json").read_text())) == {"references", "campaigns"}
        with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:
            assert {"sku", "text", "text_sparse"} <= set(store._fields()) and store.count("spring") == 24
        campaigns = Path(studio.env["DROP_STUDIO_MILVUS_URI"]).with_name("milvus-campaigns.db")
        with ProductImageStore(str(campaigns), collection="product_images_campaigns") as store:
            # The test server answers each brief with a picture at the ratio it asks (1:1, 16:9): two rows.
            assert "sku" in store._fields() and store.count("spring") == 2

        [again] = _run(ROOT, env)
        assert again["ok"] and again["encoded"] == 0 and len(gemini.requests) == 2

        # Asked for, a fresh search of everything: references searched again, with their products' fields.
        [fresh] = _run(ROOT, env, "--search-again")
        assert fresh["ok"] and fresh["encoded"] == 0
        searched = json.loads((art / "references.json").read_text())
        assert {r["via"] for found in searched.values() for r in found} == {"search"}
    hits = json.loads(studio.cli("search", "a red circle", "--drop", "spring", "--top-k", "2", "--json").stdout)
    assert [Path(h["path"]).name.rsplit("_", 1)[0] for h in hits] == ["red_circle", "red_circle"]


def test_a_world_made_by_the_catalog_release_upgrades_with_nothing_encoded_searched_or_billed(studio, tmp_path):
    """The release before stages became units wrote the same files under the same keys: its world is taken
    as it is (no encoding, no search, no Gemini request, no Milvus write)."""
    old = _previous_release(tmp_path, CATALOG_RELEASE)
    draw_drop(studio.drops / "spring", spec=SPEC, briefs=NAMED)
    (studio.drops / "spring" / "products.csv").write_text(PRODUCTS)
    art = studio.artifacts / "spring"
    with FakeGemini() as gemini:
        env = {**os.environ, **studio.env, "GEMINI_API_KEY": "test-key-0123", "GOOGLE_GEMINI_BASE_URL": gemini.url}
        [before] = _run(old, env)
        assert before["ok"] and before["encoded"] == 6 and len(gemini.requests) == 1
        files = ("references.json", "references.inputs.json", "catalog.json", "briefs.json", "embeddings.parquet",
                 "campaign/poolside.png")
        kept = {name: ((art / name).read_bytes(), (art / name).stat().st_mtime_ns) for name in files}
        sidecar = json.loads((art / "campaign" / "poolside.json").read_text())

        [after] = _run(ROOT, env)
        assert after["ok"], after["error"]
        assert (after["encoded"], after["upserted"], after["deleted"], after["indexed"]) == (0, 0, 0, 6)
        assert len(gemini.requests) == 1  # nothing billed again
        # Not searched, not generated, not even rewritten; the sidecar keeps its record and gains the scores.
        assert {name: ((art / name).read_bytes(), (art / name).stat().st_mtime_ns) for name in files} == kept
        now = json.loads((art / "campaign" / "poolside.json").read_text())
        assert {k: v for k, v in now.items() if k != "scores"} == sidecar and "product_fidelity" in now["scores"]


# The release before channels: what it published from briefs without channels is published again as it is.
CHANNELS_RELEASE = "87271ec619608a4ffedd85e17344d84f055e393b"


@pytest.mark.slow
def test_a_world_published_before_channels_and_scores_keeps_its_images_and_rows_and_is_scored_once(studio, tmp_path):
    from assets_pkg.domain.reviews import Reviews

    old = _previous_release(tmp_path, CHANNELS_RELEASE)
    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    art = studio.artifacts / "spring"
    folder = Path(studio.env["PUBLISH_DIR"]) / "spring"
    with FakeGemini() as gemini:
        env = {**os.environ, **studio.env, "GEMINI_API_KEY": "test-key-0123", "GOOGLE_GEMINI_BASE_URL": gemini.url}
        [made] = _run(old, env)
        assert made["ok"] and len(gemini.requests) == 2
        Reviews(art).record("campaign/red-hero.png", "approve", "", "Ada")
        Reviews(art).record("campaign/blue-shelf.png", "approve", "", "Ada")
        [published] = _run(old, env)
        assert published["ok"]
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        assert sorted(before) == ["blue-shelf.png", "manifest.csv", "manifest.json", "red-hero.png"]

        [after] = _run(ROOT, env)
        assert after["ok"], after["error"]
        assert after["encoded"] == 0 and len(gemini.requests) == 2  # nothing encoded or billed again
        # The same images, byte for byte; the manifest's rows as they were, with the images' scores added.
        assert {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".png"} == \
            {k: v for k, v in before.items() if k.endswith(".png")}
        rows = json.loads((folder / "manifest.json").read_text())
        assert [{k: r[k] for k in old} for r, old in zip(rows, json.loads(before["manifest.json"]))] == \
            json.loads(before["manifest.json"])
        assert all(r["product_fidelity"] is not None for r in rows)
        [scores] = list(art.rglob("scores.json"))  # each image scored once, in the upgrade's run
        stored = json.loads(scores.read_text())["images"]
        assert sorted(stored) == ["campaign/blue-shelf.png", "campaign/red-hero.png"]
        # The campaign collection of the release before scores is brought to the schema with them, its rows
        # written again with their stored vectors, and the sidecars get the scores beside the request.
        with ImageCollection(campaign_uri(studio.env["DROP_STUDIO_MILVUS_URI"]), None,
                             "product_images_campaigns") as store:
            rows = store.client.query("product_images_campaigns", filter='drop == "spring"',
                                      output_fields=["path", "fidelity"])
        assert {r["path"]: round(r["fidelity"], 4) for r in rows} == {
            image: s["product_fidelity"]["weakest"]["similarity"] for image, s in stored.items()}
        for image in stored:
            sidecar = json.loads((art / image).with_suffix(".json").read_text())
            assert sidecar["scores"]["product_fidelity"] == stored[image]["product_fidelity"]
            assert "usage" in sidecar and sidecar["cache_key"]  # the request's record as it was
        scored = scores.stat().st_mtime_ns
        [again] = _run(ROOT, env)
        assert again["ok"] and len(gemini.requests) == 2 and scores.stat().st_mtime_ns == scored


@pytest.mark.parametrize("drop", ["drinkware", "fruit-stand", "sports-gear"])
def test_every_sample_picture_has_a_sku_name_category_and_colour(drop):
    """The demo shows the product: each picture of the sample drops is a catalog row with all four fields,
    and the SKUs its briefs name are in it."""
    from assets_pkg.stages.briefs.logic import check_products, load_briefs
    from assets_pkg.stages.catalog.logic import read_catalog

    folder = ROOT / "data" / "drops" / drop
    pictures = sorted(p.name for p in folder.glob("*.png"))
    catalog = read_catalog(folder, pictures, {})
    assert catalog.rejected == [] and sorted(catalog.products) == pictures
    assert all(p.sku and p.name and p.category and p.color for p in catalog.products.values())
    briefs = load_briefs(folder / "briefs.yaml")
    check_products(briefs, catalog, folder / "briefs.yaml")  # raises on a SKU the catalog lacks
    if drop == "sports-gear":
        assert next(b for b in briefs if b.id == "ballpark-day").products == ["SG-312", "SG-311"]


# The release whose scores lived in scores.json alone: its sidecars and campaign rows get them, copied, not computed.
SCORES_RELEASE = "bdcb9824599b4cbacf8c94eb4e3746474bdc8496"


@pytest.mark.slow
def test_a_world_scored_before_sidecars_and_rows_held_scores_gets_them_without_scoring_encoding_or_billing(
        studio, tmp_path):
    old = _previous_release(tmp_path, SCORES_RELEASE)
    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    art = studio.artifacts / "spring"
    with FakeGemini() as gemini:
        env = {**os.environ, **studio.env, "GEMINI_API_KEY": "test-key-0123", "GOOGLE_GEMINI_BASE_URL": gemini.url}
        [made] = _run(old, env)
        assert made["ok"] and len(gemini.requests) == 2
        [scores] = list(art.rglob("scores.json"))
        [vectors] = list(art.rglob("campaign-vectors.parquet"))
        before, encoded_at = json.loads(scores.read_text()), vectors.stat().st_mtime_ns
        sidecars = {p.name: json.loads(p.read_text()) for p in (art / "campaign").glob("*.json")}
        assert sorted(sidecars) == ["blue-shelf.json", "red-hero.json"] and not any("scores" in s for s in sidecars.values())

        [after] = _run(ROOT, env)
        assert after["ok"], after["error"]
        assert after["encoded"] == 0 and len(gemini.requests) == 2
        # Nothing scored again (the images' vectors were not even read), the scores copied where they belong.
        def unchanging(images):  # an image's "files" names its sidecar's version, which changed
            return {image: {k: v for k, v in s.items() if k != "files"} for image, s in images.items()}

        assert unchanging(json.loads(scores.read_text())["images"]) == unchanging(before["images"])
        assert vectors.stat().st_mtime_ns == encoded_at
        for name, old_sidecar in sidecars.items():
            now = json.loads((art / "campaign" / name).read_text())
            image = before["images"][f"campaign/{name[:-5]}.png"]
            assert {k: v for k, v in now.items() if k != "scores"} == old_sidecar
            assert now["scores"] == {"model": before["model"], "product_fidelity": image["product_fidelity"],
                                     "prompt_match": image["prompt_match"]}
        with ImageCollection(campaign_uri(studio.env["DROP_STUDIO_MILVUS_URI"]), None,
                             "product_images_campaigns") as store:
            rows = store.client.query("product_images_campaigns", filter='drop == "spring"',
                                      output_fields=["path", "fidelity", "prompt_match"])
        assert {r["path"]: (round(r["fidelity"], 4), round(r["prompt_match"], 4)) for r in rows} == {
            image: (s["product_fidelity"]["weakest"]["similarity"], s["prompt_match"]["similarity"])
            for image, s in before["images"].items()}

        written = {p.name: p.stat().st_mtime_ns for p in (art / "campaign").glob("*.json")}
        [again] = _run(ROOT, env)
        assert again["ok"] and len(gemini.requests) == 2
        assert {p.name: p.stat().st_mtime_ns for p in (art / "campaign").glob("*.json")} == written


def test_the_fused_search_scores_every_hit_as_milvus_own_rrf_hybrid_search_does(tmp_path):
    """The hybrid search fuses CLIP's and BM25's rankings itself (two searches are cheaper than Lite's
    `hybrid_search`); it must rank as Milvus's RRFRanker would: the same scores, and the same rows wherever
    a score is not tied at the cut-off. With a drop filter, only that drop's rows."""
    import numpy as np
    from pymilvus import AnnSearchRequest, RRFRanker

    words = ["red", "silk", "cape", "gold", "watch", "white", "sneakers", "straw", "hat", "leather", "bag", "glass"]
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(600, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with ProductImageStore(str(tmp_path / "m.db")) as store:
        for d in range(3):
            rows = [{"sha256": f"{i:064x}", "path": f"p{i}.jpg", "aliases": [], "width": 1, "height": 1,
                     "vector": vectors[i], "product": {"sku": f"SKU-{i}", "name": " ".join(rng.choice(words, 3)),
                                                       "category": "bags", "color": "red", "tags": [],
                                                       "attributes": {}}}
                    for i in range(200 * d, 200 * (d + 1))]
            store.sync_drop(f"drop{d}", rows, 16)
        assert store.full_text
        compared = 0
        for n, query in enumerate(["red silk cape", "gold watch", "straw hat", "white leather bag", "glass"]):
            vector = vectors[n * 37] + 0.1 * rng.normal(size=16).astype(np.float32)
            vector /= np.linalg.norm(vector)
            for drop in (None, "drop1"):
                ours = store.search(vector, drop=drop, top_k=10, texts=[query])[0]
                expr = f'drop == "{drop}"' if drop else None
                requests = [AnnSearchRequest([vector.tolist()], "vector", {"metric_type": "COSINE"}, 50, expr=expr),
                            AnnSearchRequest([query], SPARSE, {"metric_type": "BM25"}, 50, expr=expr)]
                theirs = store.client.hybrid_search(store.collection, requests, RRFRanker(60), limit=10)[0]
                assert [round(h.score, 6) for h in ours] == [round(float(h["distance"]), 6) for h in theirs]
                cut = round(float(theirs[-1]["distance"]), 6)
                assert {h.id for h in ours if round(h.score, 6) > cut} == \
                    {h["id"] for h in theirs if round(float(h["distance"]), 6) > cut}
                assert all(h.drop == drop for h in ours) if drop else len({h.drop for h in ours}) > 1
                assert all(set(h.words) <= set(query.split()) for h in ours) and any(h.words for h in ours)
                compared += 1
        assert compared == 10
