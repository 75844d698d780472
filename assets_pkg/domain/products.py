"""The words of products that every part shares: the fields a search filters on, what a valid value of each
is, and the text full-text search reads for an image. The catalog stage (stages/catalog) validates rows with
these; the store and the search page filter with them."""

from __future__ import annotations

import re
from typing import Iterable

from .errors import StudioError

# The scalar fields a search can filter on, besides drop and kind.
FILTER_FIELDS = ("sku", "category", "color")
SKU_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")
# Filter values are quoted into Milvus expressions: no quote or backslash can reach one.
LABEL_RE = re.compile(r"^\w[\w &'/+.-]{0,63}$")


def normalize_label(value: str) -> str:
    """Category and colour as compared: stripped, single spaces, lower case."""
    return " ".join(value.split()).lower()


class InvalidFilter(StudioError):
    """A filter value that no catalog value can have; the message starts with the field's name."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.param = name


def filter_value(name: str, value: str) -> str:
    """A filter's value as the rows hold it (category and colour in lower case), or InvalidFilter: only such
    values are ever quoted into a Milvus expression."""
    if name not in FILTER_FIELDS:
        raise InvalidFilter(name, f"not a filter; filter on {', '.join(FILTER_FIELDS)}")
    if not isinstance(value, str):
        raise InvalidFilter(name, f"must be text, got {value!r}")
    if name == "sku":
        if not SKU_RE.fullmatch(value.strip()):
            raise InvalidFilter(name, f"{value!r} is not a SKU (1-64 letters, digits, '.', '_', '/' or '-')")
        return value.strip()
    label = normalize_label(value)
    if not LABEL_RE.fullmatch(label):
        raise InvalidFilter(name, f"{value!r} is not a {name} a catalog can hold (1-64 letters, digits, spaces "
                                  f"or & ' / + . -)")
    return label


_WORD_SPLIT = re.compile(r"[\W_]+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=[0-9])|(?<=[0-9])(?=[A-Za-z])")
MAX_TEXT_BYTES = 16_000


def file_words(path: str) -> str:
    """`Summer/an_apple-01.PNG` -> `summer an apple 01`: the words of a file's name and folders."""
    stem = path.rsplit(".", 1)[0] if "." in path.rsplit("/", 1)[-1] else path
    words = [w for part in _WORD_SPLIT.split(stem) for w in _CAMEL.split(part) if w]
    return " ".join(words).lower()


def search_text(path: str, aliases: Iterable[str], product: dict | None) -> str:
    """What full-text search reads for one image: its names' words, then the catalog's text."""
    parts = [file_words(p) for p in (path, *aliases)]
    if product:
        parts += [product.get("sku", ""), product.get("name", ""), product.get("category", ""),
                  product.get("color", ""), " ".join(product.get("tags", [])),
                  " ".join(str(v) for v in product.get("attributes", {}).values())]
    text = " ".join(p for p in parts if p)
    return text.encode()[:MAX_TEXT_BYTES].decode(errors="ignore")
