"""The references stage: for each brief, the images of the products it names (in that order), then the drop's
images that best match its query (Milvus's hybrid search of CLIP and BM25, with the brief's filters).

The references depend on the briefs' search inputs (query, top_k, products, filters), the weights and the
drop's rows (whose digest covers the catalog's product fields), and on nothing else: while those are the
same (`inputs_key`), the references are kept without loading the model or opening Milvus.

Files: references.json ({brief id: [{path, score, sha256, via, sku, name}]}) and references.inputs.json (the
key of the inputs they were searched with).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ...domain import upgrade
from ...domain.artifacts import DropArtifacts, digest
from ...domain.record import StageRecord
from ...domain.storage import exists
from ...domain.store import MAX_TOP_K, ImageCollection
from ..briefs.logic import Brief, read_briefs
from ..catalog.logic import read_catalog_of
from ..collection.logic import sync_record
from ..embeddings.logic import read_embeddings
from ..scan.logic import read_manifest

if TYPE_CHECKING:
    from ...domain.encoder import ClipEncoder

FILES = ("references.json", "references.inputs.json")

@dataclass(frozen=True)
class ReferencesReport:
    briefs: list[Brief]
    refs: dict[str, list[dict]]  # brief id -> [{path, score, sha256, via, sku, name}]: named products, then best first
    searched: bool
    key: str  # the inputs they were searched with
    adopted: bool = False  # kept from a previous release's search of the same inputs

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.refs.values())

    @property
    def briefs_without_references(self) -> list[str]:
        return [b.id for b in self.briefs if not self.refs.get(b.id)]


def _rows(sync: dict) -> dict:
    # collection.json also holds counts and the Lite file's fingerprint, which change whenever any drop is written
    return {k: sync.get(k) for k in ("model_id", "collection", "milvus", "rows_digest")}


def inputs_key(briefs: list[Brief], sync: dict) -> str:
    """Exactly what the references depend on: each brief's search inputs and the drop's rows."""
    return digest({"search": [{"id": b.id, "query": b.query, "top_k": b.top_k, "products": b.products,
                               "where": b.where} for b in briefs], "rows": _rows(sync)})


def named_references(briefs: list[Brief], art: DropArtifacts, files: DropArtifacts | None = None) \
        -> dict[str, list[dict]]:
    """For each brief, the images of the products it names, in its order and each product's catalog order;
    only images that have a vector in the model's `files` (the encoder could read them), each content once."""
    refs: dict[str, list[dict]] = {b.id: [] for b in briefs}
    if not any(b.products for b in briefs):
        return refs
    catalog = read_catalog_of(art)
    images = read_manifest(art).images
    sha_of = dict(zip(images["path"], images["sha256"]))
    embedded = set(read_embeddings(files or art)[0])
    skus = catalog.skus
    for b in briefs:
        seen = set()
        for sku in b.products:
            for file in skus.get(sku, []):
                sha = sha_of.get(file)
                if sha in embedded and sha not in seen:
                    seen.add(sha)
                    refs[b.id].append({"path": file, "score": None, "sha256": sha, "via": "sku", "sku": sku,
                                       "name": catalog.products[file].name})
    return refs


def read_references(art: DropArtifacts) -> dict[str, list[dict]]:
    return art.read_json("references.json", {})


def _record(art: DropArtifacts) -> StageRecord:
    return StageRecord(art, "references.inputs.json")


def find_references(drop: str, art: DropArtifacts, load_encoder: Callable[[], "ClipEncoder"],
                    open_store: Callable[[], ImageCollection], force: bool = False,
                    files: DropArtifacts | None = None) -> ReferencesReport:
    """The references of the drop's briefs: kept while their inputs are the same, unless `force` (a fresh
    search with today's ranking). `load_encoder`, `open_store` and `files` are those of the model search
    answers from (domain/search_models.py)."""
    briefs = read_briefs(art)
    sync = sync_record(files or art).last
    key = inputs_key(briefs, sync)
    record = _record(art)
    intact = lambda r: exists(art / "references.json")  # noqa: E731
    if not force and record.kept(key, intact):
        return ReferencesReport(briefs, read_references(art), searched=False, key=key)
    if not force and upgrade.adopt_references(art, record, briefs, _rows(sync), key, intact):
        return ReferencesReport(briefs, read_references(art), searched=False, key=key, adopted=True)
    refs = named_references(briefs, art, files)
    queried = [b for b in briefs if b.query]
    if queried:
        vectors = load_encoder().embed_texts([b.query for b in queried])
        with open_store() as store:
            for b, vector in zip(queried, vectors):
                pinned = {r["sha256"] for r in refs[b.id]}
                hits = store.search(vector, drop=drop, top_k=min(b.top_k + len(pinned), MAX_TOP_K),
                                    texts=[b.query], where=b.where)[0]
                refs[b.id] += [{"path": h.path, "score": round(h.score, 4), "sha256": h.sha256, "via": "search",
                                "sku": h.sku, "name": h.name} for h in hits if h.sha256 not in pinned][: b.top_k]
    art.write_json("references.json", refs)
    record.write(key)
    return ReferencesReport(briefs, refs, searched=True, key=key)
