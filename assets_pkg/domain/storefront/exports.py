"""A brand's catalog as its store exports it, read into the pictures it names and the product each shows:

- a Shopify product CSV export, in either header set Shopify has used (`Handle`, `Variant SKU`, `Image Src`,
  `Variant Image`, `Product Category`... or `URL handle`, `SKU`, `Product image URL`, `Variant image URL`,
  `Product category`, and the colour metafield column);
- a Google Merchant Center feed, as TSV or as RSS 2.0 XML with the `g:` namespace.

Each picture becomes a row of the drop's catalog as `products.csv` gives it (sku, name, category, color, tags,
and the other facts as attributes, the image's alt text among them, so full-text search reads it). A row that
cannot be read is one line naming the file, the line and the field; the good rows go on.
"""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

MAX_ADDITIONAL_IMAGES = 10  # Merchant Center's own limit for additional_image_link
G = "{http://base.google.com/ns/1.0}"


class ExportError(ValueError):
    """The file cannot be read at all (one line naming it)."""


@dataclass
class Picture:
    """One picture URL and the product it shows."""

    url: str
    sku: str
    name: str
    line: int  # where the row naming it starts
    category: str = ""
    color: str = ""
    tags: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)

    def catalog_row(self, file: str) -> dict[str, str]:
        """The products.csv row of this picture stored as `file`."""
        return {"file": file, "sku": self.sku, "name": self.name, "category": self.category, "color": self.color,
                "tags": ";".join(self.tags), **self.attributes}


@dataclass
class StoreExport:
    kind: str  # shopify, merchant-tsv, merchant-xml
    pictures: list[Picture]
    rejected: list[dict]  # {"line", "field", "reason"}

    def attribute_names(self) -> list[str]:
        return sorted({k for p in self.pictures for k in p.attributes})


def _category(value: str) -> str:
    """The most specific level of a taxonomy path ("Apparel > Shoes > Sneakers" -> "Sneakers")."""
    return re.split(r"\s*>\s*", value.strip())[-1].strip() if value.strip() else ""


def _url(value: str) -> str:
    return value.strip()


def read_export(name: str, data: bytes) -> StoreExport:
    """A Shopify CSV or a Merchant Center feed (TSV or XML), told apart by their first bytes and headers."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ExportError(f"{name}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); export it as UTF-8") from None
    if text.lstrip().startswith("<"):
        return _merchant_xml(name, text)
    first = text.split("\n", 1)[0]
    if "\t" in first:
        return _merchant_rows(name, "merchant-tsv", _table(text, "\t"))
    rows = _table(text, ",")
    header = {h.strip().lower() for h in (rows[0][1] if rows else [])}
    if {"handle", "url handle"} & header:
        return _shopify(name, rows)
    if "image_link" in header:
        return _merchant_rows(name, "merchant-csv", rows)
    raise ExportError(f"{name}:1: neither a Shopify product export (no Handle or URL handle column) nor a Merchant "
                      f"Center feed (no image_link column)")


def _table(text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """(line where the record starts, its values), quoted newlines kept inside their value."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    out, line = [], 1
    for values in reader:
        if any(v.strip() for v in values):
            out.append((line, values))
        line = reader.line_num + 1
    return out


SHOPIFY = {  # both header sets, lower case -> one name
    "handle": "handle", "url handle": "handle", "title": "title", "vendor": "vendor", "type": "type",
    "tags": "tags", "product category": "category", "variant sku": "sku", "sku": "sku",
    "image src": "image", "product image url": "image", "image position": "position",
    "image alt text": "alt", "variant image": "variant_image", "variant image url": "variant_image",
}


def _shopify_column(header: str) -> str | None:
    h = header.strip().lower()
    if h in SHOPIFY:
        return SHOPIFY[h]
    if m := re.fullmatch(r"option([123]) (name|value)", h):
        return f"option{m.group(1)}_{m.group(2)}"
    if h.startswith("color (product.metafields") or "metafields.shopify.color-pattern" in h:
        return "color_metafield"
    return None


def _shopify(name: str, rows: list[tuple[int, list[str]]]) -> StoreExport:
    (_, header), body = rows[0], rows[1:]
    columns = [_shopify_column(h) for h in header]
    rejected: list[dict] = []
    products: dict[str, dict] = {}  # handle -> product facts, its pictures (url -> Picture), its variants
    for line, values in body:
        if len(values) != len(header):
            rejected.append({"line": line, "field": "", "reason": f"{len(values)} values, but the header has "
                                                                  f"{len(header)} columns"})
            continue
        row = {c: v.strip() for c, v in zip(columns, values) if c}
        handle = row.get("handle", "")
        if not handle:
            rejected.append({"line": line, "field": "Handle", "reason": "the handle is empty"})
            continue
        product = products.setdefault(handle, {"line": line, "title": "", "facts": {}, "images": [], "variants": []})
        if row.get("title"):
            product["title"] = row["title"]
            product["facts"] = {k: row.get(k, "") for k in ("vendor", "type", "category", "tags", "color_metafield")}
            product["options"] = [row.get(f"option{i}_name", "") for i in (1, 2, 3)]
        if row.get("image"):
            product["images"].append((line, row["image"], row.get("alt", "")))
        options = [row.get(f"option{i}_value", "") for i in (1, 2, 3)]
        if row.get("sku") or any(options):
            product["variants"].append((line, row.get("sku", ""), options, row.get("variant_image", "")))
    pictures: list[Picture] = []
    for handle, product in products.items():
        if not product["title"]:
            rejected.append({"line": product["line"], "field": "Title",
                             "reason": f"product {handle!r} has no row with its title"})
            continue
        facts, names = product["facts"], product.get("options", ["", "", ""])
        variants = [v for v in product["variants"] if v[1]]
        for line, sku, options, _ in product["variants"]:
            if not sku:
                rejected.append({"line": line, "field": "Variant SKU", "reason": "a variant without a SKU"})

        def picture(url: str, line: int, sku: str, options: list[str], alt: str) -> Picture:
            attrs = {k: facts[k] for k in ("vendor", "type") if facts.get(k)} | {"handle": handle}
            color = facts.get("color_metafield", "")
            for n, v in zip(names, options):
                if n and v and (n.strip(), v.strip()) != ("Title", "Default Title"):  # Shopify's "no variants"
                    if n.strip().lower() in ("color", "colour"):
                        color = v
                    else:
                        attrs[n.strip().lower()] = v
            if alt:
                attrs["alt"] = alt
            tags = [t.strip() for t in facts.get("tags", "").split(",") if t.strip()]
            return Picture(url, sku, product["title"], line, _category(facts.get("category") or "") or facts.get("type", ""),
                           color, tags, attrs)

        seen: dict[str, Picture] = {}
        for line, sku, options, image in variants:  # a variant's own picture: its SKU, its colour
            if image and image not in seen:
                alt = next((a for _, u, a in product["images"] if u == image), "")
                seen[image] = picture(image, line, sku, options, alt)
        first = variants[0] if variants else (product["line"], handle, ["", "", ""], "")
        for line, url, alt in product["images"]:  # the product's pictures: its first variant
            if url not in seen:
                seen[url] = picture(url, line, first[1], first[2] if len(variants) == 1 else ["", "", ""], alt)
        pictures += seen.values()
    return StoreExport("shopify", pictures, sorted(rejected, key=lambda r: r["line"]))


MERCHANT = ("id", "title", "description", "link", "image_link", "additional_image_link", "product_type",
            "google_product_category", "color", "item_group_id")


def _merchant_item(line: int, item: dict[str, str], rejected: list[dict]) -> list[Picture]:
    sku = item.get("id", "").strip()
    for key, reason in (("id", "the id is empty"), ("title", "the title is empty"), ("image_link", "no image_link")):
        if not item.get(key, "").strip():
            rejected.append({"line": line, "field": key, "reason": reason})
            return []
    urls = [_url(item["image_link"])]
    extra = [u.strip() for u in item.get("additional_image_link", "").split(",") if u.strip()]
    if len(extra) > MAX_ADDITIONAL_IMAGES:
        rejected.append({"line": line, "field": "additional_image_link",
                         "reason": f"{len(extra)} additional images; Merchant Center takes at most "
                                   f"{MAX_ADDITIONAL_IMAGES}, the first {MAX_ADDITIONAL_IMAGES} are kept"})
    urls += [u for u in extra[:MAX_ADDITIONAL_IMAGES] if u not in urls]
    attrs = {k: item[k].strip() for k in ("item_group_id", "link") if item.get(k, "").strip()}
    category = _category(item.get("product_type", "")) or _category(item.get("google_product_category", ""))
    return [Picture(u, sku, item["title"].strip(), line, category, item.get("color", "").strip(), [], attrs)
            for u in urls]


def _merchant_rows(name: str, kind: str, rows: list[tuple[int, list[str]]]) -> StoreExport:
    (_, header), body = rows[0], rows[1:]
    header = [h.strip().lower() for h in header]
    if "image_link" not in header or "id" not in header:
        raise ExportError(f"{name}:1: a Merchant Center feed needs the columns id and image_link "
                          f"(found: {', '.join(header)})")
    pictures, rejected = [], []
    for line, values in body:
        if len(values) != len(header):
            rejected.append({"line": line, "field": "", "reason": f"{len(values)} values, but the header has "
                                                                  f"{len(header)} columns"})
            continue
        pictures += _merchant_item(line, dict(zip(header, values)), rejected)
    return StoreExport(kind, pictures, rejected)


def _merchant_xml(name: str, text: str) -> StoreExport:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise ExportError(f"{name}:{e.position[0]}: not well-formed XML ({e.msg if hasattr(e, 'msg') else e})") from None
    items = root.findall("./channel/item")
    lines = [m.start() for m in re.finditer(r"<item[\s>]", text)]  # ElementTree keeps no line numbers
    pictures, rejected = [], []
    for i, element in enumerate(items):
        line = text.count("\n", 0, lines[i]) + 1 if i < len(lines) else 0
        item = {}
        for child in element:
            tag = child.tag.removeprefix(G)
            if tag in MERCHANT and (child.text or "").strip():
                item[tag] = ",".join(filter(None, [item.get(tag, ""), child.text.strip()])) \
                    if tag == "additional_image_link" else child.text.strip()
        pictures += _merchant_item(line, item, rejected)
    return StoreExport("merchant-xml", pictures, rejected)
