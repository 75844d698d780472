"""A drop from a store's export: Shopify product CSVs in both header sets and Merchant Center feeds (TSV and
XML), their pictures fetched from a local HTTP server the test starts (and allows), conditionally the second
time, and refused where a store must not reach."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
from pathlib import Path

import pytest
from PIL import Image

from assets_pkg.domain.products import filter_value  # noqa: F401  (the catalog's own rules read the rows)
from assets_pkg.domain.storefront.exports import ExportError, read_export
from assets_pkg.domain.storefront.fetch import fetch
from assets_pkg.domain.storefront.importer import import_export
from assets_pkg.stages.catalog.logic import parse_catalog
from conftest import draw_drop
from test_catalog import _search

COLOURS = {"red": (220, 30, 30), "blue": (30, 70, 220), "green": (30, 160, 60), "yellow": (230, 200, 30)}


def _png(colour: str, size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, COLOURS[colour]).save(buf, "PNG")
    return buf.getvalue()


class Store:
    """A store's CDN: pictures by path with ETags, a log of what it sent, and answers a test can change."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.special: dict[str, tuple[int, dict, bytes]] = {}
        self.log: list[tuple[str, int, int]] = []  # path, status, body bytes
        store = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path in store.special:
                    status, headers, body = store.special[self.path]
                elif self.path in store.files:
                    body = store.files[self.path]
                    etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                    if self.headers.get("If-None-Match") == etag:
                        status, headers, body = 304, {"ETag": etag}, b""
                    else:
                        status, headers = 200, {"ETag": etag, "Content-Type": "image/png"}
                else:
                    status, headers, body = 404, {}, b"not here"
                store.log.append((self.path, status, len(body)))  # before answering: a client that has its answer sees it
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def sent(self) -> int:
        return sum(n for _, status, n in self.log if status == 200)


@pytest.fixture
def store():
    s = Store()
    yield s
    s.server.shutdown()


ALLOW = frozenset({"127.0.0.1"})

SHOPIFY_OLD = """Handle,Title,Body (HTML),Vendor,Type,Tags,Option1 Name,Option1 Value,Option2 Name,Option2 Value,Variant SKU,Image Src,Image Position,Image Alt Text,Variant Image,Product Category
sun-hat,Sun hat,"<p>Wide brim,
packs flat</p>",Acme,Hats,"summer, beach",Color,Red,Size,M,HAT-R,{u}/hat-red.png,1,Red sun hat from the front,{u}/hat-red.png,Apparel & Accessories > Clothing Accessories > Hats
sun-hat,,,,,,,Blue,,M,HAT-B,{u}/hat-side.png,2,Side view,{u}/hat-blue.png,
sun-hat,,,,,,,,,,,{u}/hat-top.png,3,Top view,,
pool-tile,Pool tile,,Acme,Tiles,,Title,Default Title,,,TILE-1,{u}/tile.png,1,,,Home & Garden > Tiles
broken,Broken row,,Acme
"""

SHOPIFY_NEW = """URL handle,Title,Description,Vendor,Product category,Type,Tags,Option1 name,Option1 value,SKU,Product image URL,Image position,Image alt text,Variant image URL,Color (product.metafields.shopify.color-pattern)
sun-hat,Sun hat,"Wide brim,
packs flat",Acme,Apparel & Accessories > Clothing Accessories > Hats,Hats,"summer, beach",Color,Red,HAT-R,{u}/hat-red.png,1,Red sun hat from the front,{u}/hat-red.png,red
sun-hat,,,,,,,,Blue,HAT-B,{u}/hat-side.png,2,Side view,{u}/hat-blue.png,
sun-hat,,,,,,,,,,{u}/hat-top.png,3,Top view,,
pool-tile,Pool tile,,Acme,Home & Garden > Tiles,Tiles,,Title,Default Title,TILE-1,{u}/tile.png,1,,,
broken,Broken row,,Acme
"""

MERCHANT_TSV = ("id\ttitle\tdescription\tlink\timage_link\tadditional_image_link\tproduct_type\tgoogle_product_category\t"
                "color\titem_group_id\n"
                "HAT-R\tSun hat\tWide brim\thttps://shop.example/hat\t{u}/hat-red.png\t{u}/hat-side.png,{u}/hat-top.png\t"
                "Apparel > Hats\t173\tRed\tsun-hat\n"
                "HAT-B\tSun hat\tWide brim\thttps://shop.example/hat\t{u}/hat-blue.png\t\tApparel > Hats\t173\tBlue\tsun-hat\n"
                "TILE-1\tPool tile\t\thttps://shop.example/tile\t{u}/tile.png\t\tHome > Tiles\t\t\t\n"
                "\tNo id\t\t\t{u}/x.png\t\t\t\t\t\n")

MERCHANT_XML = """<?xml version="1.0"?>
<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0"><channel><title>Acme</title>
<item><g:id>HAT-R</g:id><g:title>Sun hat</g:title><g:link>https://shop.example/hat</g:link>
  <g:image_link>{u}/hat-red.png</g:image_link><g:additional_image_link>{u}/hat-side.png</g:additional_image_link>
  <g:additional_image_link>{u}/hat-top.png</g:additional_image_link><g:product_type>Apparel &gt; Hats</g:product_type>
  <g:color>Red</g:color><g:item_group_id>sun-hat</g:item_group_id></item>
<item><g:id>HAT-B</g:id><g:title>Sun hat</g:title><g:link>https://shop.example/hat</g:link>
  <g:image_link>{u}/hat-blue.png</g:image_link><g:product_type>Apparel &gt; Hats</g:product_type>
  <g:color>Blue</g:color><g:item_group_id>sun-hat</g:item_group_id></item>
<item><g:id>TILE-1</g:id><g:title>Pool tile</g:title><g:link>https://shop.example/tile</g:link>
  <g:image_link>{u}/tile.png</g:image_link><g:product_type>Home &gt; Tiles</g:product_type></item>
<item><g:id></g:id><g:title>No id</g:title><g:image_link>{u}/x.png</g:image_link></item>
</channel></rss>
"""


def _serve(store: Store) -> None:
    for name, colour in (("hat-red", "red"), ("hat-blue", "blue"), ("hat-side", "red"), ("hat-top", "yellow"),
                         ("tile", "green")):
        store.files[f"/{name}.png"] = _png(colour, (64 + len(name), 48))


def _catalog(folder: Path) -> dict[str, tuple]:
    """url's picture name -> what the catalog (products.csv, read by the catalog's own rules) says of it."""
    state = json.loads((folder / ".store-pictures.json").read_text())
    by_file = {entry["file"]: url.rsplit("/", 1)[1] for url, entry in state.items()}
    catalog = parse_catalog((folder / "products.csv").read_text(), list(by_file), {})
    assert catalog.rejected == []
    return {by_file[f]: (p.sku, p.name, p.category or "", p.color or "", tuple(p.tags or ()), p.attributes.get("alt", ""))
            for f, p in catalog.products.items()}


SHOPIFY_CATALOG = {
    "hat-red.png": ("HAT-R", "Sun hat", "hats", "red", ("summer", "beach"), "Red sun hat from the front"),
    "hat-blue.png": ("HAT-B", "Sun hat", "hats", "blue", ("summer", "beach"), ""),
    "hat-side.png": ("HAT-R", "Sun hat", "hats", "", ("summer", "beach"), "Side view"),
    "hat-top.png": ("HAT-R", "Sun hat", "hats", "", ("summer", "beach"), "Top view"),
    "tile.png": ("TILE-1", "Pool tile", "tiles", "", (), ""),
}
# The current header set has the product's colour metafield: its pictures that no variant claims have that colour.
SHOPIFY_NEW_CATALOG = {**SHOPIFY_CATALOG,
                       "hat-side.png": ("HAT-R", "Sun hat", "hats", "red", ("summer", "beach"), "Side view"),
                       "hat-top.png": ("HAT-R", "Sun hat", "hats", "red", ("summer", "beach"), "Top view")}
MERCHANT_CATALOG = {
    "hat-red.png": ("HAT-R", "Sun hat", "hats", "red", (), ""),
    "hat-side.png": ("HAT-R", "Sun hat", "hats", "red", (), ""),
    "hat-top.png": ("HAT-R", "Sun hat", "hats", "red", (), ""),
    "hat-blue.png": ("HAT-B", "Sun hat", "hats", "blue", (), ""),
    "tile.png": ("TILE-1", "Pool tile", "tiles", "", (), ""),
}


@pytest.mark.parametrize("name, text, catalog, rejected", [
    ("products_export.csv", SHOPIFY_OLD, SHOPIFY_CATALOG, ["products_export.csv:7: 4 values, but the header has 16 columns"]),
    ("products_export_1.csv", SHOPIFY_NEW, SHOPIFY_NEW_CATALOG, ["products_export_1.csv:7: 4 values, but the header has 15 columns"]),
    ("feed.tsv", MERCHANT_TSV, MERCHANT_CATALOG, ["feed.tsv:5: id: the id is empty"]),
    ("feed.xml", MERCHANT_XML, MERCHANT_CATALOG, ["feed.xml:12: id: the id is empty"]),
])
def test_an_export_becomes_exactly_the_catalog_products_csv_gives(store, tmp_path, name, text, catalog, rejected):
    _serve(store)
    export = tmp_path / name
    export.write_text(text.format(u=store.url))
    report = import_export(export, tmp_path / "drop", ALLOW, 10_000_000, 64_000_000)
    assert report.rejected == rejected
    assert (report.pictures, report.fetched, report.failed) == (5, 5, [])
    assert _catalog(tmp_path / "drop") == catalog
    # The export is kept with the drop, under the one name a run refreshes it from.
    kept = tmp_path / "drop" / f"store-export{Path(name).suffix}"
    assert kept.read_text() == export.read_text() and len(list((tmp_path / "drop").glob("store-export*"))) == 1


def test_a_rerun_downloads_nothing_a_changed_picture_alone_and_a_404_leaves_the_drop(store, tmp_path):
    _serve(store)
    export = tmp_path / "feed.tsv"
    export.write_text(MERCHANT_TSV.format(u=store.url))
    folder = tmp_path / "drop"
    first = import_export(export, folder, ALLOW, 10_000_000, 64_000_000)
    assert first.fetched == 5 and first.bytes == store.sent()
    store.log.clear()
    again = import_export(export, folder, ALLOW, 10_000_000, 64_000_000)
    assert (again.fetched, again.unchanged, again.bytes, store.sent()) == (0, 5, 0, 0)
    assert sorted(status for _, status, _ in store.log) == [304] * 5  # one conditional request per picture

    store.log.clear()
    store.files["/tile.png"] = _png("blue", (80, 80))  # changed on the server: a new ETag
    del store.files["/hat-top.png"]  # gone
    changed = import_export(export, folder, ALLOW, 10_000_000, 64_000_000)
    assert (changed.fetched, changed.unchanged, changed.removed) == (1, 3, 1)
    assert [p for p, status, _ in store.log if status == 200] == ["/tile.png"]
    assert changed.failed == [f"feed.tsv:2: {store.url}/hat-top.png: HTTP 404"]
    assert "hat-top.png" not in _catalog(folder) and len(list((folder / "pictures").iterdir())) == 4

    store.server.shutdown()  # the store stops answering: one line per picture, nothing fetched before is lost
    store.server.server_close()
    down = import_export(export, folder, ALLOW, 10_000_000, 64_000_000)
    assert down.fetched == 0 and len(down.failed) == 5 and all("did not answer" in f for f in down.failed)
    assert len(list((folder / "pictures").iterdir())) == 4 and len(_catalog(folder)) == 4


def test_what_a_store_must_not_reach_is_refused_in_one_line(store, tmp_path):
    store.special["/to-metadata"] = (302, {"Location": "http://169.254.169.254/latest/meta-data"}, b"")
    store.special["/to-private"] = (302, {"Location": "http://10.0.0.7/x.png"}, b"")
    store.special["/huge.png"] = (200, {}, _png("red") + b"\0" * 2000)
    store.special["/page.png"] = (200, {"Content-Type": "text/html"}, b"<html><body>Sign in</body></html>")
    for i in range(5):
        store.special[f"/loop{i}"] = (302, {"Location": f"/loop{i + 1}"}, b"")

    def why(url: str, allow=ALLOW) -> str:
        got = fetch(url, allow, 1000, 64_000_000)
        assert got.status == "failed" and got.data == b""
        return got.reason

    assert why("file:///etc/passwd") == "refused: only http and https URLs are fetched, not file"
    assert why("ftp://127.0.0.1/x.png") == "refused: only http and https URLs are fetched, not ftp"
    assert why(f"{store.url}/to-metadata") == ("refused: 169.254.169.254 is a non-public address (169.254.169.254); "
                                               "list 169.254.169.254 in FETCH_ALLOW_HOSTS to fetch from it")
    assert why(f"{store.url}/to-private").startswith("refused: 10.0.0.7 is a non-public address")
    assert why(f"{store.url}/x.png", allow=frozenset()).startswith("refused: 127.0.0.1 is a non-public address")
    assert why(f"{store.url}/huge.png").endswith("is over FETCH_MAX_BYTES (1000)")
    assert why(f"{store.url}/page.png") == "not an image"
    assert why(f"{store.url}/loop0") == "more than 3 redirects"


def test_an_unreadable_export_is_one_line_naming_it(tmp_path):
    with pytest.raises(ExportError) as e:
        read_export("notes.csv", b"sku,name\nSKU-1,x\n")
    assert str(e.value) == ("notes.csv:1: neither a Shopify product export (no Handle or URL handle column) nor a "
                            "Merchant Center feed (no image_link column)")
    with pytest.raises(ExportError) as e:
        read_export("feed.tsv", "id\ttitle\timage_link\nA\tCaf\xe9\tx\n".encode("latin-1"))
    assert str(e.value) == "feed.tsv:2: not UTF-8 text (byte 0xe9); export it as UTF-8"


def test_drops_import_then_run_finds_a_variant_by_its_sku_and_colour(studio, store):
    _serve(store)
    export = studio.root / "products_export.csv"
    export.write_text(SHOPIFY_NEW.format(u=store.url))
    env = {"FETCH_ALLOW_HOSTS": "127.0.0.1"}
    made = studio.cli("drops", "import", str(export), "--drop", "summer", extra_env=env, check=False)
    assert made.returncode == 0, made.stderr
    assert made.stderr.strip().splitlines() == ["drop-studio: products_export.csv:7: 4 values, but the header has 15 columns"]
    assert "5 pictures: 5 fetched" in made.stdout
    (studio.drops / "summer" / "briefs.yaml").write_text(
        "briefs:\n  - id: blue-hat\n    prompt: The blue hat on a beach\n    products: [HAT-B]\n")
    [s] = studio.run_json("--drop", "summer")
    assert s["ok"] and (s["encoded"], s["indexed"], s["products"]) == (5, 5, 3) and s["catalog_rejected"] == []
    hits = _search(studio, "HAT-B", 1)
    assert hits[0]["sku"] == "HAT-B" and hits[0]["match"] == "sku"
    assert {h["sku"] for h in _search(studio, "sun hat", 10, color="blue")} == {"HAT-B"}


def test_a_drop_that_keeps_its_feed_is_refreshed_by_each_run_and_the_sensor_sees_a_changed_feed(studio, store):
    from assets_pkg.domain.drops import ProductDrop, drop_fingerprint
    from assets_pkg.domain.store import ProductImageStore

    _serve(store)
    folder = studio.drops / "summer"
    folder.mkdir()
    (folder / "store-export.tsv").write_text(MERCHANT_TSV.format(u=store.url))
    env = {"FETCH_ALLOW_HOSTS": "127.0.0.1"}
    [first] = studio.run_json("--drop", "summer", extra_env=env)
    assert first["ok"] and (first["encoded"], first["indexed"], first["products"]) == (5, 5, 3)

    store.log.clear()
    fingerprint = drop_fingerprint(ProductDrop("summer", folder))
    assert store.log == []  # a sensor tick downloads nothing
    [again] = studio.run_json("--drop", "summer", extra_env=env)
    assert (again["encoded"], store.sent()) == (0, 0) and [s for _, s, _ in store.log] == [304] * 5
    assert drop_fingerprint(ProductDrop("summer", folder)) == fingerprint  # a refresh alone does not re-trigger

    store.files["/tile.png"] = _png("blue", (80, 80))  # a new picture behind the same URL
    del store.files["/hat-top.png"]
    [changed] = studio.run_json("--drop", "summer", extra_env=env)
    assert (changed["encoded"], changed["indexed"]) == (1, 4)
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as milvus:
        assert sorted(r.product[0] for r in milvus.rows_of_drop("summer").values()) == ["HAT-B", "HAT-R", "HAT-R", "TILE-1"]
    rejected = [r for r in _rejections(studio, "summer") if r["file"] == "store-export.tsv"]
    assert [r["reason"] for r in rejected] == ["2: " + f"{store.url}/hat-top.png: HTTP 404", "5: id: the id is empty"]

    (folder / "store-export.tsv").write_text(MERCHANT_TSV.format(u=store.url).replace("Pool tile", "Pool tile XL"))
    assert drop_fingerprint(ProductDrop("summer", folder)) != fingerprint  # a changed feed is a changed drop

    store.server.shutdown()  # the store is down: the run fails in one line, and the drop keeps what it had
    store.server.server_close()
    down = studio.cli("run", "--json", "--drop", "summer", extra_env=env, check=False)
    [summary] = json.loads(down.stdout)
    assert down.returncode == 1 and summary["error"].startswith(
        f"raw_product_images: store-export.tsv: the store did not answer for any of its 5 pictures ({store.url}/")
    assert summary["error"].endswith("the pictures fetched before are kept")
    assert len(list((folder / "pictures").iterdir())) == 4
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as milvus:
        assert milvus.count("summer") == 4


def _rejections(studio, drop: str) -> list[dict]:
    from assets_pkg.domain.artifacts import DropArtifacts
    from assets_pkg.stages.scan.logic import read_manifest

    return read_manifest(DropArtifacts.at(studio.artifacts, drop)).rejected
