"""Search for the people who pick pictures: text and "more like this" search over product images and
generated campaign images, the facts of each drop, and thumbnails of the files the index names.

A `SearchService` serves one process (`drop-studio serve`): the CLIP model is loaded once, and the Milvus
connection is kept open between requests (connection.py). Only files that the index names (rows of a drop,
in Milvus) or the artifacts name (contact sheets) are ever read for a client: a path is looked up among a
drop's rows, never joined onto a folder as given.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

from cachetools import LRUCache, TTLCache

from ..domain import storage
from ..domain.artifacts import DropArtifacts, read_json
from ..domain.channels import channels_for
from ..domain.drops import DROP_NAME_RE, discover_drops, load_rgb
from ..domain.listing import added_at, as_iso
from ..domain.query import Query, newest_first, refine, with_words
from ..domain.reviews import image_stem
from ..domain.store import ImageCollection
from ..stages.campaigns.logic import campaign_dir
from ..stages.campaigns.outputs import CampaignOutputs
from ..stages.campaigns.scores import Thresholds, flagged, read_scores, summary
from ..stages.duplicates.logic import collapse as collapse_hits, collapse_index, read_duplicates
from ..stages.selects.publishing import preview
from ..stages.selects.renditions import RenditionRefused
from .connection import Collections
from .drop_view import DropView
from .params import KINDS, BadRequest

if TYPE_CHECKING:
    from ..domain.encoder import ClipEncoder
    from ..domain.search_models import ModelEntry

THUMBNAIL_SIDE = 320
PREVIEW_SIDE = 400  # a rendition's preview, on its long side: enough to judge a crop
QUERY_VECTORS_KEPT = 1024  # a 512-d vector is 2 KB: 2 MB at most
THUMBNAILS_KEPT = 2048  # about 30 MB of JPEGs
SERVING_CHECK_S = 1.0  # how often the page looks whether search moved to another model


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
    added: float | None = None  # when its file was added (listing.added_at), asked only for `sort=added`

    @classmethod
    def of(cls, kind: str, h) -> "Found":
        return cls(kind=kind, drop=h.drop, path=h.path, score=h.score, sku=h.sku, name=h.name, match=h.match,
                   similarity=h.similarity, why=h.why, words=h.words, category=h.category, color=h.color)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "drop": self.drop, "path": self.path, "similarity": round(self.similarity, 4),
                "why": list(self.why), "words": list(self.words), "score": round(self.score, 4),
                "sku": self.sku, "name": self.name, "category": self.category, "color": self.color,
                "match": self.match, **({"added": as_iso(self.added)} if self.added is not None else {})}




class SearchService:
    """What `drop-studio serve` answers from: DROPS_DIR, ARTIFACTS_DIR, Milvus and the CLIP model."""

    def __init__(self, drops_dir: str, artifacts_dir: str, open_products: Callable[[], ImageCollection],
                 open_campaigns: Callable[[], ImageCollection], load_encoder: Callable[["ModelEntry"], "ClipEncoder"],
                 serving: Callable[[], "ModelEntry"], cache_s: float = 10.0):
        """`serving`: the model search answers from now (domain/search_models.py); `load_encoder` loads a
        model's encoder."""
        self.drops_root = storage.location("DROPS_DIR", drops_dir)
        self.artifacts_dir = artifacts_dir
        self._connection = Collections(open_products, open_campaigns)
        self._load_encoder = load_encoder
        self._serving = serving
        self._serving_cache = TTLCache(maxsize=1, ttl=SERVING_CHECK_S)
        self._encoder: tuple[str, "ClipEncoder"] | None = None
        self._encoder_lock = threading.Lock()
        self._cached = TTLCache(maxsize=4096, ttl=cache_s)  # drop names, rows, facets: seconds-old is fine
        self._cache_lock = threading.Lock()
        self._thumbnails = LRUCache(maxsize=THUMBNAILS_KEPT)
        # (model, words) -> the words' vector: a query asked again (the next page of hits, back and forward, a
        # shared link, a refinement of the same words) skips the text encoder, most of a query's time.
        self._text_vectors = LRUCache(maxsize=QUERY_VECTORS_KEPT)
        self._text_lock = threading.Lock()
        self._thumb_lock = threading.Lock()
        self.view = DropView(artifacts_dir, self._remember, self.drop_names, self._indexed)
        # the page's drop views, answered from the stages' files
        self.drops, self.drop_detail, self.facets, self.sheet = (
            self.view.drops, self.view.detail, self.view.facets, self.view.sheet)

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

    def text_vectors(self, model: "ModelEntry", texts: list[str]):
        """The unit vectors of `texts` with `model`'s encoder, each encoded once while it stays among the
        QUERY_VECTORS_KEPT asked last."""
        import numpy as np

        with self._text_lock:
            known = {t: self._text_vectors.get((model.id, t)) for t in texts}
        todo = [t for t, v in known.items() if v is None]
        if todo:
            for t, v in zip(todo, self.encoder(model).embed_texts(todo)):
                known[t] = v
            with self._text_lock:
                for t in todo:
                    self._text_vectors[(model.id, t)] = known[t]
        return np.stack([known[t] for t in texts])

    def _indexed(self) -> dict[str, int]:
        with self._connection.use(self.model()) as (products, _):
            return {d: products.count(d) for d in self.drop_names()}

    # -- search ------------------------------------------------------------
    def search(self, query: str | Query, drop: str | None, k: int, kinds: tuple[str, ...] = KINDS,
               where: dict | None = None, collapse: bool = True) -> tuple[list[Found], "ModelEntry"]:
        """Text search (CLIP fused with BM25 over names and the catalog), filtered by drop and `where`; with
        the model that answered (the query is encoded and searched with one model's collections). With
        `collapse`, one picture of each same-shot group (product_duplicates); a Query's negative terms and
        floor refine the hits (domain/query.py)."""
        query = query if isinstance(query, Query) else Query(query)
        model = self.model()
        vector = self.text_vectors(model, [query.words])
        negatives = self.text_vectors(model, list(query.negatives)) if query.negatives else None
        return self._nearest(vector, drop, k, kinds, text=query.words, where=where, model=model, collapse=collapse,
                             query=query, negatives=negatives), model

    def duplicates(self, drop: str) -> dict:
        """The drop's same-shot and near-identical groups (product_duplicates), and its blank pictures."""
        def compute() -> dict:
            found = read_duplicates(self.model().files(DropArtifacts.at(self.artifacts_dir, drop)))
            return {k: found.get(k, []) for k in ("same_shot", "near_identical", "blank")}

        return self._remember(("duplicates", drop), compute)

    def groups_of(self, drop: str) -> dict[str, str]:
        """path -> its same-shot group's first path, for the drop's grouped pictures."""
        return self._remember(("shots", drop),
                              lambda: collapse_index(self.model().files(DropArtifacts.at(self.artifacts_dir, drop))))

    def search_by_picture(self, data: bytes, drop: str | None, k: int, kinds: tuple[str, ...] = KINDS,
                          where: dict | None = None, query: Query | None = None) -> tuple[list[Found], "ModelEntry"]:
        """The products and campaign images nearest an uploaded picture (checked by `parse_upload`), which
        is encoded in memory and never stored; with the query's words too ("this bag, in black")."""
        query = query or Query("")
        model = self.model()
        encoder = self.encoder(model)
        vector = encoder.embed_image_bytes(data)
        if query.words:
            vector = with_words(vector, self.text_vectors(model, [query.words])[0])[None]
        negatives = self.text_vectors(model, list(query.negatives)) if query.negatives else None
        return self._nearest(vector, drop, k, kinds, text=query.words or None, where=where, model=model,
                             query=query, negatives=negatives), model

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
                 where: dict | None = None, model: "ModelEntry | None" = None, collapse: bool = False,
                 query: Query | None = None, negatives=None) -> list[Found]:
        """Both collections' best, merged: exact SKU matches first, then by score (both collections are
        searched the same way, so their scores compare); with `collapse`, one of each same-shot group."""
        found: list[Found] = []
        refines = query is not None and query.refines
        limit, k = k, (2 * k if collapse or refines else k)  # room for the hits left out
        with self._connection.use(model or self.model()) as (products, campaigns):
            for kind, store in (("product", products), ("campaign", campaigns)):
                if kind in kinds and store.exists():
                    hits = store.search(vector, drop=drop, top_k=k, texts=None if text is None else [text],
                                        where=where)[0]
                    if refines:
                        hits = refine(hits, query, negatives, store.vectors, k)
                    found += [Found.of(kind, h) for h in hits]
        ranked = sorted(found, key=lambda f: (f.match != "sku", -f.score))
        ranked = collapse_hits(ranked, self.groups_of, limit) if collapse else ranked[:limit]
        if query is not None and query.sort == "added":
            ranked = [replace(f, added=self._added(f)) for f in ranked]
            ranked = newest_first(ranked, [f.added for f in ranked])
        return ranked

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

    def channels(self, drop: str) -> dict:
        """The channels the drop's briefs may name (the table, with DROPS_DIR's and the drop's channels.yaml)."""
        return self._remember(("channels", drop), lambda: channels_for(self.drops_root, self.drops_root / drop))

    def scores(self, drop: str) -> dict[str, dict]:
        """campaign image -> its scores by the serving model as the page shows them (stages/campaigns/scores.py),
        with why it is flagged (empty: it is not)."""
        def compute() -> dict[str, dict]:
            stored = read_scores(self.model().files(DropArtifacts.at(self.artifacts_dir, drop)))
            why = flagged(stored, Thresholds.from_settings())
            return {image: {**summary(s), "flagged": why.get(image, [])}
                    for image, s in (stored.get("images") or {}).items()}

        return self._remember(("scores", drop), compute)

    def rendition_preview(self, drop: str, path: str, channel: str) -> bytes:
        """`channel`'s rendition of an indexed campaign image as publishing will cut it (PREVIEW_SIDE on its
        long side), for a brief that names that channel."""
        row = self._rows("campaign", drop).get(path)
        if row is None:
            raise BadRequest("path", f"{path!r} is not in the index of drop {drop!r}")
        outputs = CampaignOutputs(campaign_dir(DropArtifacts.at(self.artifacts_dir, drop)))
        stem = image_stem(path)
        sidecar = read_json(outputs.sidecar(stem), {}) or {}
        known = self.channels(drop)
        if channel not in (sidecar.get("brief", {}).get("channels") or []) or channel not in known:
            raise BadRequest("channel", f"{path} has no rendition for {str(channel)[:50]!r}")
        key = ("rendition", row, path, channel, known[channel], sidecar.get("brief", {}).get("focus"))
        with self._thumb_lock:
            if key in self._thumbnails:
                return self._thumbnails[key]
        try:
            data = preview(outputs, stem, sidecar, known[channel], PREVIEW_SIDE)
        except RenditionRefused as e:
            raise BadRequest("channel", f"not published: {e}") from None
        with self._thumb_lock:
            self._thumbnails[key] = data
        return data

    def _added(self, f: Found) -> float | None:
        try:
            return added_at(self._source(f.kind, f.drop, f.path))
        except BadRequest:  # the file has become a link out of its drop: it has no time to tell
            return None

    def _source(self, kind: str, drop: str, path: str):
        base = self.drops_root / drop if kind == "product" else DropArtifacts.at(self.artifacts_dir, drop).root
        source = base / path
        if not storage.is_remote(source):
            # The index named this path, but the file may since have become a link out of the drop.
            if not os.path.realpath(source).startswith(os.path.realpath(base) + os.sep):
                raise BadRequest("path", f"{path!r} leaves the folder of drop {drop!r}")
        return source
