"""The catalog stage: which product each picture of a drop shows, from the drop's optional `products.csv`.

    file,sku,name,category,color,tags,season
    hats/straw-front.jpg,SKU-4471,Straw sun hat,Hats,Natural,summer;beach,SS25

One row per image file: `file` (the path relative to the drop) is required; `sku`, `name`, `category`,
`color` and `tags` (`;`-separated) are the product fields; any other column is kept as an attribute.
Several files may share a SKU (front, back, detail). Rows are validated one by one (pydantic): a bad row is
rejected with its line (`products.csv:17: ...`) and the good rows go on. A problem with the file as a whole
(not UTF-8, no `file` column) is one `CatalogError` naming the file.

Category and colour are compared case-insensitively (filters, facets), so they are kept in lower case;
SKUs are identifiers and keep their case.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Annotated, Iterable, Optional

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, field_validator

from ...domain import storage
from ...domain.artifacts import DropArtifacts, digest
from ...domain.drops import CATALOG_FILE
from ...domain.errors import StudioError
from ...domain.products import LABEL_RE, SKU_RE, normalize_label
from ...domain.storage import AnyPath
from ..scan.logic import read_manifest

FILES = ("catalog.json",)  # validated rows (file -> sku, name, ...) and rejected rows with their lines
PRODUCT_COLUMNS = ("sku", "name", "category", "color", "tags")
MAX_NAME = 200
MAX_TAGS = 32
MAX_ATTRIBUTES_BYTES = 8000  # the attributes column of a Milvus row holds them as JSON


class CatalogError(StudioError):
    pass


Sku = Annotated[str, StringConstraints(pattern=SKU_RE.pattern)]


class Product(BaseModel):
    """One catalog row, as validated. Strings only (a CSV holds nothing else); empty means unknown."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: Annotated[str, StringConstraints(min_length=1)]
    sku: Optional[Sku] = None
    name: Annotated[str, StringConstraints(max_length=MAX_NAME)] = ""
    category: Annotated[str, StringConstraints(pattern=LABEL_RE.pattern)] | None = None
    color: Annotated[str, StringConstraints(pattern=LABEL_RE.pattern)] | None = None
    tags: tuple[Annotated[str, StringConstraints(pattern=LABEL_RE.pattern)], ...] = ()
    attributes: dict[str, str] = {}

    @field_validator("category", "color", mode="before")
    @classmethod
    def _label(cls, v):
        return normalize_label(v) or None if isinstance(v, str) else v

    @field_validator("tags", mode="before")
    @classmethod
    def _split_tags(cls, v):
        if isinstance(v, str):
            tags = [normalize_label(t) for t in v.split(";")]
            v = tuple(dict.fromkeys(t for t in tags if t))  # in order, each once
        if len(v) > MAX_TAGS:
            raise ValueError(f"at most {MAX_TAGS} tags")
        return v

    @field_validator("attributes")
    @classmethod
    def _attributes_fit(cls, v):
        if len(json.dumps(v, ensure_ascii=False).encode()) > MAX_ATTRIBUTES_BYTES:
            raise ValueError(f"the other columns hold more than {MAX_ATTRIBUTES_BYTES} bytes")
        return v

    def fields(self) -> dict:
        """The product fields of a Milvus row (strings; tags and attributes as JSON)."""
        return {"sku": self.sku or "", "name": self.name, "category": self.category or "", "color": self.color or "",
                "tags": list(self.tags), "attributes": dict(self.attributes)}


@dataclass
class Catalog:
    """The validated rows of a drop's products.csv (by file), and the rejected ones with their line."""

    products: dict[str, Product] = field(default_factory=dict)  # file -> product, in file order
    rejected: list[dict] = field(default_factory=list)  # [{line, file, reason}]
    present: bool = False  # whether the drop has a products.csv

    @property
    def skus(self) -> dict[str, list[str]]:
        """SKU -> its files, in catalog order."""
        out: dict[str, list[str]] = {}
        for f, p in self.products.items():
            if p.sku:
                out.setdefault(p.sku, []).append(f)
        return out

    def to_json(self) -> dict:
        return {"present": self.present, "rejected": self.rejected,
                "products": [p.model_dump(mode="json") for p in self.products.values()]}

    @classmethod
    def from_json(cls, doc: dict | None) -> "Catalog":
        doc = doc or {}
        products = [Product(**p) for p in doc.get("products", [])]
        return cls({p.file: p for p in products}, doc.get("rejected", []), doc.get("present", False))


def _reason(error: dict, raw: dict) -> str:
    key = str(error["loc"][0]) if error["loc"] else ""
    value = raw.get(key)
    if key == "sku":
        return f"sku {value!r} must be 1-64 letters, digits, '.', '_', '/' or '-', starting with a letter or digit"
    if key in ("category", "color") or (key == "tags" and error["type"] == "string_pattern_mismatch"):
        return (f"{key} {value!r}: each value must be 1-64 letters, digits, spaces or & ' / + . - "
                f"(no quotes or backslashes)")
    if key == "name":
        return f"name is {len(value)} characters long; at most {MAX_NAME}"
    return f"{key}: {error['msg'].removeprefix('Value error, ')}"


def parse_catalog(text: str, valid_files: Iterable[str], rejected_files: dict[str, str],
                  where: str = CATALOG_FILE) -> Catalog:
    """Validate the rows of a products.csv. `valid_files`: the drop's image files that the scan accepted;
    `rejected_files`: file -> why the scan rejected it. Line numbers are those a text editor shows (header =
    line 1), also for quoted values that span lines.

    Read with the csv module rather than pandas: it gives every record the line it starts on and hands back
    rows of the wrong length, which pandas reports only as warnings and whose lines it would shift."""
    valid = set(valid_files)
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise CatalogError(f"{where}: empty file (expected a header line with a 'file' column)") from None
    except csv.Error as e:
        raise CatalogError(f"{where}:1: not a CSV header ({e})") from None
    columns = [c.strip().lower() for c in header]
    if "file" not in columns:
        raise CatalogError(f"{where}:1: no 'file' column in the header (found: {', '.join(columns) or 'nothing'})")
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated or "" in columns:
        what = f"column(s) {', '.join(duplicated)} appear twice" if duplicated else "a column has no name"
        raise CatalogError(f"{where}:1: {what}")
    catalog = Catalog(present=True)
    first_line: dict[str, int] = {}
    line = reader.line_num + 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            catalog.rejected.append({"line": line, "file": "", "reason": f"not valid CSV ({e})"})
            line = reader.line_num + 1
            continue
        start, line = line, reader.line_num + 1
        if not any(v.strip() for v in record):
            continue  # a blank line
        if len(record) != len(columns):
            file = record[columns.index("file")].strip() if len(record) > columns.index("file") else ""
            catalog.rejected.append({"line": start, "file": file, "reason": f"{len(record)} values, but the header "
                                                                             f"has {len(columns)} columns"})
            continue
        raw = {c: v.strip() for c, v in zip(columns, record)}
        file = raw["file"].replace("\\", "/").removeprefix("./")
        problem = None
        if not file:
            problem = "the 'file' value is empty"
        elif file in first_line:
            problem = f"file {file!r} is listed twice (first on line {first_line[file]})"
        elif file in rejected_files:
            problem = f"file {file!r} was rejected by the scan ({rejected_files[file]})"
        elif file not in valid:
            problem = f"file {file!r} is not an image of this drop"
        elif "sku" in raw and not raw["sku"]:
            problem = "the sku is empty"
        if problem is None:
            values = {"file": file, **{c: raw[c] for c in PRODUCT_COLUMNS if raw.get(c)},
                      "attributes": {c: v for c, v in raw.items() if c not in ("file", *PRODUCT_COLUMNS) and v}}
            try:
                product = Product(**values)
            except ValidationError as e:
                problem = _reason(e.errors()[0], values)
        if file and file not in first_line:
            first_line[file] = start
        if problem is not None:
            catalog.rejected.append({"line": start, "file": file, "reason": problem})
            continue
        catalog.products[file] = product
    return catalog


def read_catalog(drop_folder: AnyPath, valid_files: Iterable[str], rejected_files: dict[str, str]) -> Catalog:
    """The drop's catalog; an empty one when it has no products.csv."""
    path = drop_folder / CATALOG_FILE
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError:
        return Catalog()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CatalogError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as "
                           f"UTF-8 CSV") from None
    return parse_catalog(text, valid_files, rejected_files, where=str(path))


@dataclass(frozen=True)
class CatalogReport:
    catalog: Catalog
    changed: bool  # whether catalog.json was rewritten
    unlisted: int  # valid images of the drop that no catalog row names

    @property
    def key(self) -> str:
        return digest(self.catalog.to_json())


def read_catalog_of(art: DropArtifacts) -> Catalog:
    """The drop's validated catalog; empty for a drop without products.csv (or never scanned)."""
    return Catalog.from_json(art.read_json("catalog.json"))


def update_catalog(drop_folder: AnyPath, art: DropArtifacts) -> CatalogReport:
    """Validate the drop's products.csv against its scanned files and keep the result (`art`: the drop's
    DropArtifacts). Editing only products.csv changes this and the Milvus rows' product fields, never a
    vector: embeddings are keyed by content."""
    manifest = read_manifest(art)
    valid = list(manifest.images["path"]) if manifest else []
    rejected = {r["file"]: r["reason"] for r in (manifest.rejected if manifest else [])}
    catalog = read_catalog(drop_folder, valid, rejected)
    changed = art.update_json("catalog.json", catalog.to_json())
    return CatalogReport(catalog, changed, unlisted=len(set(valid) - set(catalog.products)))


