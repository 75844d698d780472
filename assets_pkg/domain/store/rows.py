"""A row of an image collection: its id, the facts that decide whether it is written again, filters, hits."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import NamedTuple, Sequence

from ..drops import validate_drop_name
from ..errors import StoreError
from ..products import filter_value

COLLECTION_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
PRODUCT_FIELDS = ("sku", "name", "category", "color", "tags", "attributes")
FIELDS = ("id", "drop", "sha256", "path", "aliases", "width", "height", *PRODUCT_FIELDS, "text", "vector")
SPARSE = "text_sparse"  # BM25 of `text`, made by Milvus itself (absent on servers older than 2.5)
HIT_FIELDS = ["drop", "path", "aliases", "sku", "name", "category", "color"]
# A campaign collection's rows also hold the image's scores (stages/campaigns/scores.py) as scalar fields, for
# filters such as `flagged == true` or `fidelity < 0.6`: the weakest product's likeness, the prompt's match and
# whether the image is flagged. A row not scored (yet) holds NO_SCORES.
SCORE_FIELDS = ("fidelity", "prompt_match", "flagged")
NO_SCORES = (-1.0, -1.0, False)
MAX_TOP_K = 100  # hits of one search: what the page shows, a brief retrieves, the CLI prints
# Each side of a hybrid search brings this many candidates (at least) for RRF to fuse: a row that only one
# side ranks highly must still meet the other side's ranking to be fused, not be cut off before it.
MIN_CANDIDATES = 50
RRF_K = 60  # RRF's damping constant, Milvus's default


class RowFacts(NamedTuple):
    """What a row says besides its vector: a row whose facts are unchanged is not written again."""

    path: str
    aliases: tuple[str, ...]
    product: tuple  # sku, name, category, color, tags (JSON), attributes (JSON)
    scores: tuple = ()  # a campaign row's fidelity, prompt_match, flagged (SCORE_FIELDS); () for a product row


def _product_values(product: dict | None) -> tuple:
    p = product or {}
    return (p.get("sku", ""), p.get("name", ""), p.get("category", ""), p.get("color", ""),
            json.dumps(list(p.get("tags", [])), ensure_ascii=False),
            json.dumps(dict(p.get("attributes", {})), ensure_ascii=False, sort_keys=True))


def _score_values(scores: dict | None) -> tuple:
    """A campaign row's scores as stored: similarities to 4 places (Milvus keeps float32), -1.0 for none."""
    s = scores or {}
    similarity = [round(float(s[k]), 4) if s.get(k) is not None else NO_SCORES[i]
                  for i, k in enumerate(SCORE_FIELDS[:2])]
    return (*similarity, bool(s.get("flagged", False)))


def row_facts(row: dict) -> RowFacts:
    """The facts of a row to write (keys path, aliases, optionally product, and scores for a campaign image)."""
    return RowFacts(row["path"], tuple(row.get("aliases") or ()), _product_values(row.get("product")),
                    _score_values(row["scores"]) if "scores" in row else ())


# What a row without product fields holds in them (and a row of the previous schema is read as holding).
NO_PRODUCT = dict(zip(PRODUCT_FIELDS, _product_values(None)))


def stored_facts(r: dict) -> RowFacts:
    return RowFacts(r["path"], tuple(json.loads(r.get("aliases") or "[]")),
                    tuple(r.get(f, NO_PRODUCT[f]) for f in PRODUCT_FIELDS),
                    _score_values(dict(zip(SCORE_FIELDS, (r[f] for f in SCORE_FIELDS)))) if SCORE_FIELDS[0] in r else ())


def row_id(drop: str, sha256: str) -> str:
    return f"{drop}/{sha256}"


def drop_filter(drop: str) -> str:
    """`drop == "<name>"` from a validated name; json.dumps quotes it as a string literal."""
    return f"drop == {json.dumps(validate_drop_name(drop))}"


def filter_expr(drop: str | None = None, where: dict | None = None) -> str:
    """A Milvus filter from validated values only: `drop == "a" and category == "footwear"`."""
    parts = [drop_filter(drop)] if drop else []
    for name, value in (where or {}).items():
        parts.append(f"{name} == {json.dumps(filter_value(name, value), ensure_ascii=False)}")
    return " and ".join(parts)


def checked_ids(drop: str, ids: Sequence[str]) -> list[str]:
    """`ids`, each a well-formed row id of `drop`: a delete never reaches another drop's rows."""
    prefix = validate_drop_name(drop) + "/"
    for i in ids:
        if not (isinstance(i, str) and i.startswith(prefix) and re.fullmatch(r"[0-9a-f]{64}", i[len(prefix):])):
            raise StoreError(f"refusing to delete {i!r}: not a row id of drop {drop!r}")
    return list(ids)


@dataclass(frozen=True)
class SyncReport:
    """What `sync_drop` did, and the drop's row ids afterwards (read back, not assumed)."""

    upserted: int
    deleted: int
    unchanged: int
    ids: frozenset[str]
    collection_rows: int


@dataclass(frozen=True)
class Hit:
    id: str
    drop: str
    path: str  # relative to the drop folder
    score: float  # the rank score: cosine similarity (CLIP alone), or the RRF score of a hybrid search
    aliases: tuple[str, ...] = ()
    sku: str = ""
    name: str = ""
    category: str = ""
    color: str = ""
    match: str = "clip"  # clip, hybrid (CLIP + BM25), or sku (the query is this row's SKU)
    # The cosine similarity of the picture to the query (text or picture), whatever ranked it: the number a
    # person can read, where an RRF score only orders.
    similarity: float = 0.0
    # Why it was found: "sku" (the query is its SKU), "words" (the query's words in its name, catalog or file
    # name: `words`), "picture" (its picture is at least as like the query as a hit the picture alone found).
    why: tuple[str, ...] = ()
    words: tuple[str, ...] = ()

    @classmethod
    def from_milvus(cls, h: dict, match: str) -> "Hit":
        e = h["entity"]
        score = float(h["distance"])
        return cls(id=h["id"], drop=e["drop"], path=e["path"], score=score,
                   aliases=tuple(json.loads(e.get("aliases") or "[]")), sku=e.get("sku") or "",
                   name=e.get("name") or "", category=e.get("category") or "", color=e.get("color") or "",
                   match=match, similarity=score if match != "hybrid" else 0.0,
                   why=("sku",) if match == "sku" else ("picture",) if match == "clip" else ())

    @property
    def sha256(self) -> str:
        return self.id.rsplit("/", 1)[-1]


