"""The references stage: for each brief, the drop's images that best match its query (text-to-image search).

The search depends on the briefs, the weights and the drop's rows, and on nothing else: while those are the
same (`inputs_key`), the references are kept without loading the model or opening Milvus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .artifacts import DropArtifacts, digest
from .briefs import Brief
from .store import ProductImageStore

if TYPE_CHECKING:
    from .encoder import ClipEncoder


@dataclass(frozen=True)
class ReferencesReport:
    briefs: list[Brief]
    refs: dict[str, list[dict]]  # brief id -> [{path, score, sha256}], best first
    searched: bool

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.refs.values())

    @property
    def briefs_without_references(self) -> list[str]:
        return [b.id for b in self.briefs if not self.refs.get(b.id)]


def inputs_key(briefs: list[Brief], sync: dict) -> str:
    """Only what the search depends on: collection.json also holds counts and the Lite file's fingerprint,
    which change whenever any drop is written."""
    return digest({"briefs": [b.to_dict() for b in briefs],
                   "rows": {k: sync.get(k) for k in ("model_id", "collection", "milvus", "rows_digest")}})


def find_references(drop: str, art: DropArtifacts, load_encoder: Callable[[], "ClipEncoder"],
                    open_store: Callable[[], ProductImageStore]) -> ReferencesReport:
    briefs = art.read_briefs()
    key = inputs_key(briefs, art.read_sync())
    if art.references_inputs_key() == key:
        return ReferencesReport(briefs, art.read_references(), searched=False)
    refs: dict[str, list[dict]] = {}
    if briefs:
        queries = load_encoder().embed_texts([b.query for b in briefs])
        with open_store() as store:
            results = store.search(queries, drop=drop, top_k=max(b.top_k for b in briefs))
        for b, hits in zip(briefs, results):
            refs[b.id] = [{"path": h.path, "score": round(h.score, 4), "sha256": h.sha256} for h in hits[: b.top_k]]
    art.write_references(refs, key)
    return ReferencesReport(briefs, refs, searched=True)
