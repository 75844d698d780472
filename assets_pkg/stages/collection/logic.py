"""The collection stage: a drop's rows in Milvus are exactly its embedded images, keyed by drop and content.

`sync_collection` brings them in line (`ImageCollection.sync_drop`) and reads the ids back for the check.
For a Milvus Lite file it records the file's size and modification time after a verified sync: while the
drop's rows and the file are unchanged, the next run need not open Milvus at all (opening a Lite file costs
about half a second), and the check passes on that record.

Each model has its own collection and record (domain/search_models.py): a run syncs the drop into the
collection of the model it encodes with and, while a change of model is being built, brings the serving
model's rows in line with the drop too (from that model's stored vectors: images gone from the drop, new
names and catalog fields reach search at once; new images wait for the switch).

Files, in each model's files: collection.json (the key of the rows last synced, the model id, collection
and server, counts, the change of model it was synced for, and the Lite file's fingerprint after a verified
sync).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from ...domain.artifacts import DropArtifacts, digest
from ...domain.record import StageRecord
from ...domain.search_models import ModelEntry
from ...domain.store import SCHEMA_VERSION, ImageCollection, lite_fingerprint, row_id
from ..catalog.logic import read_catalog_of
from ..embeddings.logic import read_embeddings
from ..scan.logic import read_manifest

FILES = ("collection.json",)


def sync_record(files: DropArtifacts) -> StageRecord:
    """What the last sync left in a model's collection (`files`: the model's files of the drop); its key is
    the rows' digest (the field's name since the first release)."""
    return StageRecord(files, "collection.json", key_field="rows_digest")


def verified_unchanged(fingerprint: str | None):
    """A record's outputs are intact while the Milvus Lite file is as a verified sync of this schema left it
    (a server gives no such fingerprint: it is asked)."""
    return lambda record: bool(fingerprint) and record.get("verified_fingerprint") == fingerprint \
        and record.get("schema") == SCHEMA_VERSION


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
    def key(self) -> str:
        return self.rows_digest

    @property
    def matches(self) -> bool:
        return self.indexed == len(self.expected) if self.ids is None else self.ids == self.expected


def drop_rows(drop: str, art: DropArtifacts, files: DropArtifacts | None = None) -> tuple[list[dict], str | None, int]:
    """(rows with their vectors and product fields, model id, dim): one row per distinct image that has a
    vector (in the model's `files`). An image's product is the catalog row of its path, else of the first of
    its other names that has one (the same bytes under two names are one row)."""
    sha, vecs, model_id = read_embeddings(files or art)
    vector_of = dict(zip(sha, vecs))
    products = read_catalog_of(art).products
    rows = []
    for r in read_manifest(art).unique_images.to_dict("records"):
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


def sync_collection(drop: str, art: DropArtifacts, open_store: Callable[[], ImageCollection], uri: str,
                    collection: str, display_uri: str, files: DropArtifacts | None = None,
                    transition: str | None = None, verify: bool = False) -> CollectionReport:
    """Make the drop's rows in `collection` exactly its images that have a vector in `files` (the model's
    files; the drop's own artifacts by default). `transition`: the change of model this sync builds, kept in
    the record (search_models.switch_if_ready counts the drops built for it)."""
    files = files or art
    rows, model_id, dim = drop_rows(drop, art, files)
    expected = frozenset(row_id(drop, r["sha256"]) for r in rows)
    digest_now = rows_digest(drop, rows, model_id, collection, display_uri)
    products = sum(1 for r in rows if r["product"])
    record = sync_record(files)
    last = record.last
    fingerprint = lite_fingerprint(uri)
    if not verify and (kept := record.kept(digest_now, intact=verified_unchanged(fingerprint))):
        report = CollectionReport(digest_now, expected, None, kept["indexed"], kept["collection_rows"],
                                  unchanged=len(rows), products=products)
        verified = fingerprint
    else:
        with open_store() as store:
            done = store.sync_drop(drop, rows, dim, rewrite_all=last.get("model_id") != model_id)
        report = CollectionReport(digest_now, expected, done.ids, len(done.ids), done.collection_rows,
                                  done.upserted, done.deleted, done.unchanged, products)
        verified = store.fingerprint_at_close if report.matches else None
    facts = {"transition": transition} if transition and report.matches else {}
    record.write(digest_now, model_id=model_id, collection=collection, milvus=display_uri, indexed=report.indexed,
                 collection_rows=report.collection_rows, verified_fingerprint=verified, schema=SCHEMA_VERSION,
                 **facts)
    return report


def keep_serving_in_line(drop: str, art: DropArtifacts, serving: ModelEntry,
                         open_store: Callable[[], ImageCollection], uri: str, display_uri: str) -> str | None:
    """While a change of model is built: the serving model's rows of the drop synced from its stored vectors
    (images gone, names and catalog fields reach search at once). Returns their key; None when the serving
    model never had the drop."""
    files = serving.files(art)
    if not sync_record(files).last:
        return None
    return sync_collection(drop, art, open_store, uri, serving.collection, display_uri, files=files).key
