"""The collection stage: a drop's rows in Milvus are exactly its embedded images, keyed by drop and content.

`sync_collection` brings them in line (`ProductImageStore.sync_drop`) and reads the ids back for the check.
For a Milvus Lite file it records the file's size and modification time after a verified sync: while the
drop's rows and the file are unchanged, the next run need not open Milvus at all (opening a Lite file costs
about half a second), and the check passes on that record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .artifacts import DropArtifacts, digest
from .store import ProductImageStore, lite_fingerprint, row_id


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

    @property
    def matches(self) -> bool:
        return self.indexed == len(self.expected) if self.ids is None else self.ids == self.expected


def drop_rows(drop: str, art: DropArtifacts) -> tuple[list[dict], str | None, int]:
    """(rows with their vectors, model id, dim): one row per distinct image that has a vector."""
    sha, vecs, model_id = art.read_embeddings()
    vector_of = dict(zip(sha, vecs))
    rows = [{**r, "vector": vector_of[r["sha256"]]} for r in art.read_manifest().unique_images.to_dict("records")
            if r["sha256"] in vector_of]
    return rows, model_id, vecs.shape[1]


def sync_collection(drop: str, art: DropArtifacts, open_store: Callable[[], ProductImageStore], uri: str,
                    collection: str, display_uri: str) -> CollectionReport:
    rows, model_id, dim = drop_rows(drop, art)
    expected = frozenset(row_id(drop, r["sha256"]) for r in rows)
    rows_digest = digest({"model": model_id, "collection": collection, "milvus": display_uri,
                          "rows": sorted((row_id(drop, r["sha256"]), r["path"], *r["aliases"]) for r in rows)})
    last = art.read_sync()
    fingerprint = lite_fingerprint(uri)
    if fingerprint and last.get("rows_digest") == rows_digest and last.get("verified_fingerprint") == fingerprint:
        report = CollectionReport(rows_digest, expected, None, last["indexed"], last["collection_rows"],
                                  unchanged=len(rows))
        verified = fingerprint
    else:
        with open_store() as store:
            done = store.sync_drop(drop, rows, dim, rewrite_all=last.get("model_id") != model_id)
        report = CollectionReport(rows_digest, expected, done.ids, len(done.ids), done.collection_rows,
                                  done.upserted, done.deleted, done.unchanged)
        verified = store.fingerprint_at_close if report.matches else None
    art.mark_synced(model_id, collection, display_uri, rows_digest, indexed=report.indexed,
                    collection_rows=report.collection_rows, verified_fingerprint=verified)
    return report
