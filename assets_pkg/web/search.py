"""Search for the people who pick pictures: text and "more like this" search over product images and
generated campaign images, the facts of each drop, and thumbnails of the files the index names.

A `SearchService` serves one process (`drop-studio serve`): the CLIP model is loaded once, and the Milvus
connection is kept open between requests. A Milvus Lite file can be open in one process at a time: the
page keeps it open and shares it, so runs work through the page's Milvus while it searches; a request made
while a run that started first holds the file fails fast (503) with a clear message.

Only files that the index names (rows of a drop, in Milvus) or the artifacts name (contact sheets) are
ever read for a client: a path is looked up among a drop's rows, never joined onto a folder as given.
"""

from __future__ import annotations

import io
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

from cachetools import LRUCache, TTLCache

from ..domain import storage
from ..domain.artifacts import DropArtifacts, read_json
from ..domain.drops import DROP_NAME_RE, decode_problem, discover_drops, load_rgb
from ..domain.errors import StudioError
from ..domain.milvus import campaign_collection
from ..domain.products import FILTER_FIELDS, InvalidFilter, filter_value
from ..domain.store import MAX_TOP_K, ImageCollection
from ..stages.briefs.logic import read_briefs
from ..stages.campaigns.logic import campaign_dir, campaign_pngs
from ..stages.campaigns.requests import image_path
from ..stages.catalog.logic import read_catalog_of
from ..stages.references.logic import read_references
from ..stages.scan.logic import read_manifest

if TYPE_CHECKING:
    from ..domain.encoder import ClipEncoder
    from ..domain.search_models import ModelEntry

KINDS = ("product", "campaign")
MAX_QUERY_CHARS = 300
THUMBNAIL_SIDE = 320
MAX_UPLOAD_BYTES = 20_000_000  # a picture to search by
THUMBNAILS_KEPT = 2048  # about 30 MB of JPEGs
SIDECARS_KEPT = 20_000  # campaign images' facts, a few KB each
SHEETS = ("drop", "references", "campaign")
RETRY_OPEN_S = 2.0
SERVING_CHECK_S = 1.0  # how often the page looks whether search moved to another model  # after Milvus could not be opened, requests answer 503 at once for this long


class BadRequest(StudioError):
    """A client's argument is wrong; the message starts with the parameter's name."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param


class Busy(StudioError):
    """Milvus cannot answer now (a run holds the Lite file, or the server is down)."""


@dataclass(frozen=True)
class Found:
    kind: str  # product or campaign
    drop: str
    path: str  # relative to the drop folder (product) or to the drop's artifacts (campaign)
    score: float
    sku: str = ""
    name: str = ""
    match: str = "clip"  # clip, hybrid (CLIP + BM25) or sku (the query is the product's SKU)
    similarity: float = 0.0  # the picture's cosine similarity to the query (store.Hit)
    why: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    category: str = ""
    color: str = ""

    @classmethod
    def of(cls, kind: str, h) -> "Found":
        return cls(kind=kind, drop=h.drop, path=h.path, score=h.score, sku=h.sku, name=h.name, match=h.match,
                   similarity=h.similarity, why=h.why, words=h.words, category=h.category, color=h.color)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "drop": self.drop, "path": self.path, "similarity": round(self.similarity, 4),
                "why": list(self.why), "words": list(self.words), "score": round(self.score, 4),
                "sku": self.sku, "name": self.name, "category": self.category, "color": self.color,
                "match": self.match}


def parse_filters(params) -> dict[str, str]:
    """The catalog filters among a request's parameters (sku, category, color), checked."""
    where = {}
    for name in FILTER_FIELDS:
        raw = (params.get(name) or "").strip()
        if raw:
            try:
                where[name] = filter_value(name, raw)
            except InvalidFilter as e:
                raise BadRequest(name, str(e).split(": ", 1)[1]) from None
    return where


def parse_upload(data: bytes, max_pixels: int) -> None:
    """An uploaded picture to search by: within the size and pixel limits of drops, and an image."""
    if not data:
        raise BadRequest("image", "the request body is empty; send the image's bytes")
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadRequest("image", f"{len(data)} bytes is over the limit of {MAX_UPLOAD_BYTES} bytes")
    problem = decode_problem(data, max_pixels)
    if isinstance(problem, str):
        raise BadRequest("image", problem)


def parse_k(raw: str | None, default: int = 24) -> int:
    if raw is None or raw == "":
        return default
    try:
        k = int(raw)
    except ValueError:
        raise BadRequest("k", f"must be a whole number from 1 to {MAX_TOP_K}, got {raw!r}") from None
    if not 1 <= k <= MAX_TOP_K:
        raise BadRequest("k", f"must be from 1 to {MAX_TOP_K}, got {k}")
    return k


def parse_kind(raw: str | None) -> tuple[str, ...]:
    if raw in (None, "", "all"):
        return KINDS
    if raw not in KINDS:
        raise BadRequest("kind", f"must be all, product or campaign, got {raw!r}")
    return (raw,)


def parse_query(raw: str | None) -> str:
    query = (raw or "").strip()
    if not query:
        raise BadRequest("q", "the query is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise BadRequest("q", f"the query is {len(query)} characters long; at most {MAX_QUERY_CHARS}")
    return query


def _reference(r: dict) -> dict:
    """A reference as the page shows it: the product picture, how it was chosen, and its product."""
    return {"path": r["path"], "score": r.get("score"), "via": r.get("via", "search"), "sku": r.get("sku") or "",
            "name": r.get("name") or ""}


class _Connection:
    """The product and campaign collections, opened on demand and kept open, used by one request at a time.
    A Milvus Lite file stays open for as long as the page runs, shared: runs use this process's Milvus for
    it rather than wait for the file (domain/milvus.share_lite)."""

    def __init__(self, open_products: Callable[[], ImageCollection],
                 open_campaigns: Callable[[], ImageCollection]):
        self._open = (open_products, open_campaigns)  # each opens its collection of the first model
        self._lock = threading.RLock()
        self._store: ImageCollection | None = None
        self._campaigns: ImageCollection | None = None
        self._busy: tuple[float, str] | None = None  # when opening last failed, and why

    @contextmanager
    def use(self, model: "ModelEntry") -> Iterator[tuple[ImageCollection, ImageCollection]]:
        """The product and campaign stores, pointed at `model`'s collections."""
        with self._lock:
            if self._store is None:
                if self._busy is not None and time.monotonic() - self._busy[0] < RETRY_OPEN_S:
                    raise Busy(self._busy[1])  # at once: the requests queued behind a failed open need not wait
                stores = [open_store() for open_store in self._open]
                try:
                    for store in stores:
                        store.open()
                except StudioError as e:
                    for store in stores:
                        store.close()
                    self._busy = (time.monotonic(), str(e))
                    raise Busy(str(e)) from None
                self._store, self._campaigns = stores
                self._busy = None
            self._store.use_collection(model.collection)
            self._campaigns.use_collection(campaign_collection(model.collection))
            yield self._store, self._campaigns

    def close_now(self) -> None:
        for store in (self._store, self._campaigns):
            if store is not None:
                store.close()
        self._store = self._campaigns = None


class SearchService:
    """What `drop-studio serve` answers from: DROPS_DIR, ARTIFACTS_DIR, Milvus and the CLIP model."""

    def __init__(self, drops_dir: str, artifacts_dir: str, open_products: Callable[[], ImageCollection],
                 open_campaigns: Callable[[], ImageCollection], load_encoder: Callable[["ModelEntry"], "ClipEncoder"],
                 serving: Callable[[], "ModelEntry"], cache_s: float = 10.0):
        """`serving`: the model search answers from now (domain/search_models.py); `load_encoder` loads a
        model's encoder."""
        self.drops_root = storage.location("DROPS_DIR", drops_dir)
        self.artifacts_dir = artifacts_dir
        self._connection = _Connection(open_products, open_campaigns)
        self._load_encoder = load_encoder
        self._serving = serving
        self._serving_cache = TTLCache(maxsize=1, ttl=SERVING_CHECK_S)
        self._encoder: tuple[str, "ClipEncoder"] | None = None
        self._encoder_lock = threading.Lock()
        self._cached = TTLCache(maxsize=4096, ttl=cache_s)  # drop names, rows, facets: seconds-old is fine
        self._cache_lock = threading.Lock()
        self._thumbnails = LRUCache(maxsize=THUMBNAILS_KEPT)
        self._sidecars = LRUCache(maxsize=SIDECARS_KEPT)
        self._sidecar_lock = threading.Lock()
        self._thumb_lock = threading.Lock()

    def close(self) -> None:
        with self._connection._lock:
            self._connection.close_now()

    # -- cached facts ------------------------------------------------------
    def _remember(self, key: tuple, compute: Callable[[], object]):
        with self._cache_lock:
            if key in self._cached:
                return self._cached[key]
        value = compute()  # outside the lock: a slow Milvus read must not hold up other requests' cache hits
        with self._cache_lock:
            self._cached[key] = value
        return value

    def forget(self, drop: str) -> None:
        """Drop what is cached of `drop` (a run of this process changed it)."""
        with self._cache_lock:
            for key in [k for k in self._cached if k == ("drop facts",) or drop in k[1:]]:
                self._cached.pop(key, None)

    def drop_names(self) -> list[str]:
        return self._remember(("drops",), lambda: [d.name for d in discover_drops(self.drops_root).drops])

    def check_drop(self, drop: str | None, required: bool = False) -> str | None:
        if not drop:
            if required:
                raise BadRequest("drop", "missing")
            return None
        if not DROP_NAME_RE.fullmatch(drop) or drop not in self.drop_names():
            raise BadRequest("drop", f"no such drop {drop!r}")
        return drop

    def model(self) -> "ModelEntry":
        """The model search answers from, checked again every SERVING_CHECK_S."""
        with self._cache_lock:
            if "model" not in self._serving_cache:
                self._serving_cache["model"] = self._serving()
            return self._serving_cache["model"]

    def _rows(self, kind: str, drop: str) -> dict[str, str]:
        """path (and every alias) -> row id, for the drop's rows of that kind in Milvus."""
        def read() -> dict[str, str]:
            with self._connection.use(self.model()) as (products, campaigns):
                store = products if kind == "product" else campaigns
                found: dict[str, str] = {}
                for row, facts in store.rows_of_drop(drop).items():
                    for p in (facts.path, *facts.aliases):
                        found[p] = row
                return found

        return self._remember(("rows", kind, drop), read)

    def encoder(self, model: "ModelEntry | None" = None) -> "ClipEncoder":
        """The encoder of `model` (the serving one by default); the previous model's is let go after a switch."""
        model = model or self.model()
        with self._encoder_lock:
            if self._encoder is None or self._encoder[0] != model.id:
                self._encoder = (model.id, self._load_encoder(model))
            return self._encoder[1]

    # -- search ------------------------------------------------------------
    def search(self, query: str, drop: str | None, k: int, kinds: tuple[str, ...] = KINDS,
               where: dict | None = None) -> tuple[list[Found], "ModelEntry"]:
        """Text search (CLIP fused with BM25 over names and the catalog), filtered by drop and `where`; with
        the model that answered (the query is encoded and searched with one model's collections)."""
        model = self.model()
        vector = self.encoder(model).embed_texts([query])
        return self._nearest(vector, drop, k, kinds, text=query, where=where, model=model), model

    def search_by_picture(self, data: bytes, drop: str | None, k: int, kinds: tuple[str, ...] = KINDS,
                          where: dict | None = None) -> tuple[list[Found], "ModelEntry"]:
        """The products and campaign images nearest an uploaded picture (checked by `parse_upload`), which
        is encoded in memory and never stored."""
        model = self.model()
        vector = self.encoder(model).embed_image_bytes(data)
        return self._nearest(vector, drop, k, kinds, where=where, model=model), model

    def similar(self, drop: str, path: str, k: int, kind: str = "product") -> list[Found]:
        """Images of the same kind like the indexed image `path` of `drop` (by its stored vector), in every
        drop, the image itself excluded."""
        row = self._rows(kind, drop).get(path)
        if row is None:
            raise BadRequest("path", f"{path!r} is not in the index of drop {drop!r}")
        model = self.model()
        with self._connection.use(model) as (products, campaigns):
            vector = (products if kind == "product" else campaigns).vectors([row]).get(row)
        if vector is None:
            raise BadRequest("path", f"{path!r} is not in the index of drop {drop!r}")
        found = self._nearest(vector, None, k + 1, (kind,), model=model)
        return [f for f in found if not (f.drop == drop and self._rows(kind, drop).get(f.path) == row)][:k]

    def _nearest(self, vector, drop: str | None, k: int, kinds: tuple[str, ...], text: str | None = None,
                 where: dict | None = None, model: "ModelEntry | None" = None) -> list[Found]:
        """Both collections' best, merged: exact SKU matches first, then by score (both collections are
        searched the same way, so their scores compare)."""
        found: list[Found] = []
        with self._connection.use(model or self.model()) as (products, campaigns):
            for kind, store in (("product", products), ("campaign", campaigns)):
                if kind in kinds and store.exists():
                    hits = store.search(vector, drop=drop, top_k=k, texts=None if text is None else [text],
                                        where=where)[0]
                    found += [Found.of(kind, h) for h in hits]
        return sorted(found, key=lambda f: (f.match != "sku", -f.score))[:k]

    def facets(self) -> dict:
        """The values the page's filter controls offer: every drop's catalog categories, colours and SKUs."""
        def compute() -> dict:
            values: dict[str, dict[str, int]] = {"category": {}, "color": {}, "sku": {}}
            for drop in self.drop_names():
                for p in read_catalog_of(DropArtifacts.at(self.artifacts_dir, drop)).products.values():
                    for name in values:
                        v = getattr(p, name)
                        if v:
                            values[name][v] = values[name].get(v, 0) + 1
            return {name: [{"value": v, "images": n} for v, n in sorted(counts.items())]
                    for name, counts in values.items()}

        return self._remember(("facets",), compute)

    # -- drops -------------------------------------------------------------
    def drops(self) -> list[dict]:
        def compute() -> list[dict]:
            out = []
            with self._connection.use(self.model()) as (products, campaigns):
                counts = {d: products.count(d) for d in self.drop_names()}
            for drop in self.drop_names():
                art = DropArtifacts.at(self.artifacts_dir, drop)
                manifest = read_manifest(art)
                out.append({"drop": drop, "images": 0 if manifest is None else len(manifest.images),
                            "indexed": counts[drop], "briefs": len(read_briefs(art)),
                            "campaign_images": len(campaign_pngs(art))})
            return out

        return self._remember(("drop facts",), compute)

    def _sidecar(self, entry: storage.Entry) -> dict:
        """A campaign image's sidecar, read again only when the listing shows it changed."""
        key = (str(entry.path), entry.version)
        with self._sidecar_lock:
            if key in self._sidecars:
                return self._sidecars[key]
        doc = read_json(entry.path, {}) or {}
        with self._sidecar_lock:
            self._sidecars[key] = doc
        return doc

    def drop_detail(self, drop: str) -> dict:
        """The drop's counts, its briefs with their references, its campaign images with their sidecar facts
        and lineage (references, base image, the image a revision was made from and its note), which campaign
        images each product picture went into, and which contact sheets exist."""
        art = DropArtifacts.at(self.artifacts_dir, drop)
        refs = read_references(art)
        # The listing is seconds-old at most, like the drops' facts: a new image shows on the next look.
        files = self._remember(("campaign files", drop), lambda: {e.rel: e for e in storage.list_files(campaign_dir(art))})
        campaign = []
        used_in: dict[str, list[str]] = {}
        for rel in sorted(r for r in files if r.endswith(".png") and "/" not in r):
            sidecar = files.get(rel[:-4] + ".json")
            facts = self._sidecar(sidecar) if sidecar else {}
            brief = facts.get("brief", {})
            path = image_path(rel[:-len(".png")])
            campaign.append({
                "path": path, "brief": brief.get("id", rel[:-4]), "prompt": brief.get("prompt", ""),
                "model": facts.get("model"), "generator": facts.get("generator"),
                "finish_reason": facts.get("finish_reason"), "estimated_cost_usd": facts.get("estimated_cost_usd"),
                "image_size": facts.get("image_size"), "base_image": facts.get("base_image"),
                "revision": facts.get("revision"),
                "references": [_reference(r) for r in facts.get("references", [])],
            })
            for r in facts.get("references", []):
                used_in.setdefault(r["path"], []).append(path)
        briefs = [{"id": b.id, "prompt": b.prompt, "query": b.query, "products": b.products, "where": b.where,
                   "base_image": b.base_image,
                   "references": [{**_reference(r), "used_in": used_in.get(r["path"], [])} for r in refs.get(b.id, [])]}
                  for b in read_briefs(art)]
        summary = next((d for d in self.drops() if d["drop"] == drop), {"drop": drop})
        sheets = [name for name in SHEETS if storage.exists(art.sheet_path(name))]
        return {**summary, "briefs": briefs, "campaign": campaign, "used_in": used_in, "sheets": sheets}

    # -- files -------------------------------------------------------------
    def thumbnail(self, kind: str, drop: str, path: str) -> bytes:
        """A JPEG thumbnail of an indexed image (THUMBNAIL_SIDE on its long side)."""
        row = self._rows(kind, drop).get(path)
        if row is None:
            raise BadRequest("path", f"{path!r} is not in the index of drop {drop!r}")
        key = (kind, row, path)
        with self._thumb_lock:
            if key in self._thumbnails:
                return self._thumbnails[key]
        source = self._source(kind, drop, path)
        img = load_rgb(source, min_side=THUMBNAIL_SIDE)
        img.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=82)
        data = buf.getvalue()
        with self._thumb_lock:
            self._thumbnails[key] = data
        return data

    def _source(self, kind: str, drop: str, path: str):
        base = self.drops_root / drop if kind == "product" else DropArtifacts.at(self.artifacts_dir, drop).root
        source = base / path
        if not storage.is_remote(source):
            # The index named this path, but the file may since have become a link out of the drop.
            if not os.path.realpath(source).startswith(os.path.realpath(base) + os.sep):
                raise BadRequest("path", f"{path!r} leaves the folder of drop {drop!r}")
        return source

    def sheet(self, drop: str, name: str) -> bytes:
        if name not in SHEETS:
            raise BadRequest("name", f"must be one of {', '.join(SHEETS)}, got {name!r}")
        try:
            return storage.read_bytes(DropArtifacts.at(self.artifacts_dir, drop).sheet_path(name))
        except FileNotFoundError:
            raise BadRequest("name", f"drop {drop!r} has no {name} contact sheet yet") from None
