"""The collection stage: a drop's rows in Milvus are exactly its embedded images, keyed by drop and content.

`sync_collection` brings them in line (`ProductImageStore.sync_drop`) and reads the ids back for the check.
For a Milvus Lite file it records the file's size and modification time after a verified sync: while the
drop's rows and the file are unchanged, the next run need not open Milvus at all (opening a Lite file costs
about half a second), and the check passes on that record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from .artifacts import DropArtifacts, digest
from .store import SCHEMA_VERSION, ProductImageStore, lite_fingerprint, row_id


@dataclass(frozen=True)
class CollectionReport:
    rows_digest: str  # what searches of the drop can find: changes exactly when a row, a path or the weights do
    expected: frozenset[str]  # the row ids the drop should have
    ids: frozenset[str] | None  # the row ids read back; None when the unchanged Lite file vouched for them
    indexed: int
    collection_rows: int
    upserted: int = 0
    deleted: int = 0
    unchanged: int = 0
    products: int = 0  # rows that carry a catalog's product fields

    @property
    def matches(self) -> bool:
        return self.indexed == len(self.expected) if self.ids is None else self.ids == self.expected


def drop_rows(drop: str, art: DropArtifacts) -> tuple[list[dict], str | None, int]:
    """(rows with their vectors and product fields, model id, dim): one row per distinct image that has a
    vector. An image's product is the catalog row of its path, else of the first of its other names that has
    one (the same bytes under two names are one row)."""
    sha, vecs, model_id = art.read_embeddings()
    vector_of = dict(zip(sha, vecs))
    products = art.read_catalog().products
    rows = []
    for r in art.read_manifest().unique_images.to_dict("records"):
        if r["sha256"] not in vector_of:
            continue
        named = next((products[p] for p in (r["path"], *r["aliases"]) if p in products), None)
        rows.append({**r, "vector": vector_of[r["sha256"]], "product": named.fields() if named else None})
    return rows, model_id, vecs.shape[1]


def rows_digest(drop: str, rows: list[dict], model_id: str | None, collection: str, milvus: str) -> str:
    """What searches of the drop can find: changes exactly when a row, a name, a product field or the weights
    do. A row without product fields is described as before they existed, so an upgrade alone changes no
    drop's digest (and so no data version, and no reference search)."""
    described = []
    for r in rows:
        row = (row_id(drop, r["sha256"]), r["path"], *r["aliases"])
        if r.get("product"):
            row += ("product:" + json.dumps(r["product"], sort_keys=True, ensure_ascii=False),)
        described.append(row)
    return digest({"model": model_id, "collection": collection, "milvus": milvus, "rows": sorted(described)})


def sync_collection(drop: str, art: DropArtifacts, open_store: Callable[[], ProductImageStore], uri: str,
                    collection: str, display_uri: str) -> CollectionReport:
    rows, model_id, dim = drop_rows(drop, art)
    expected = frozenset(row_id(drop, r["sha256"]) for r in rows)
    digest_now = rows_digest(drop, rows, model_id, collection, display_uri)
    products = sum(1 for r in rows if r["product"])
    last = art.read_sync()
    fingerprint = lite_fingerprint(uri)
    if fingerprint and last.get("rows_digest") == digest_now and last.get("verified_fingerprint") == fingerprint \
            and last.get("schema") == SCHEMA_VERSION:
        report = CollectionReport(digest_now, expected, None, last["indexed"], last["collection_rows"],
                                  unchanged=len(rows), products=products)
        verified = fingerprint
    else:
        with open_store() as store:
            done = store.sync_drop(drop, rows, dim, rewrite_all=last.get("model_id") != model_id)
        report = CollectionReport(digest_now, expected, done.ids, len(done.ids), done.collection_rows,
                                  done.upserted, done.deleted, done.unchanged, products)
        verified = store.fingerprint_at_close if report.matches else None
    art.mark_synced(model_id, collection, display_uri, digest_now, indexed=report.indexed,
                    collection_rows=report.collection_rows, verified_fingerprint=verified, schema=SCHEMA_VERSION)
    return report
