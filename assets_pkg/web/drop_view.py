"""What the page shows of a drop: its counts, briefs and their references, campaign images with their
sidecar facts and lineage, the catalog's filter values, and its contact sheets, read from the stages'
files (the counts of indexed rows come from the caller, which holds Milvus)."""

from __future__ import annotations

import threading
from typing import Callable

from cachetools import LRUCache

from ..domain import listing, storage
from ..domain.artifacts import DropArtifacts, read_json
from ..stages.briefs.logic import read_briefs
from ..stages.campaigns.logic import campaign_dir, campaign_pngs
from ..stages.campaigns.requests import image_path
from ..stages.catalog.logic import read_catalog_of
from ..stages.references.logic import read_references
from ..stages.scan.logic import read_manifest
from .params import BadRequest

SHEETS = ("drop", "references", "campaign")
SIDECARS_KEPT = 20_000  # campaign images' facts, a few KB each


def _reference(r: dict) -> dict:
    """A reference as the page shows it: the product picture, how it was chosen, and its product."""
    return {"path": r["path"], "score": r.get("score"), "via": r.get("via", "search"), "sku": r.get("sku") or "",
            "name": r.get("name") or ""}


class DropView:
    """The drops' facts under ARTIFACTS_DIR. `remember(key, compute)` caches a value for seconds;
    `drop_names()` lists the drops; `indexed()` counts each drop's product rows in the index."""

    def __init__(self, artifacts_dir: str, remember: Callable, drop_names: Callable[[], list[str]],
                 indexed: Callable[[], dict[str, int]]):
        self.artifacts_dir = artifacts_dir
        self._remember = remember
        self._drop_names = drop_names
        self._indexed = indexed
        self._sidecars = LRUCache(maxsize=SIDECARS_KEPT)
        self._sidecar_lock = threading.Lock()

    def _art(self, drop: str) -> DropArtifacts:
        return DropArtifacts.at(self.artifacts_dir, drop)

    def facets(self) -> dict:
        """The values the page's filter controls offer: every drop's catalog categories, colours and SKUs."""
        def compute() -> dict:
            values: dict[str, dict[str, int]] = {"category": {}, "color": {}, "sku": {}}
            for drop in self._drop_names():
                for p in read_catalog_of(self._art(drop)).products.values():
                    for name in values:
                        v = getattr(p, name)
                        if v:
                            values[name][v] = values[name].get(v, 0) + 1
            return {name: [{"value": v, "images": n} for v, n in sorted(counts.items())]
                    for name, counts in values.items()}

        return self._remember(("facets",), compute)

    def drops(self) -> list[dict]:
        def compute() -> list[dict]:
            counts = self._indexed()
            out = []
            for drop in self._drop_names():
                art = self._art(drop)
                manifest = read_manifest(art)
                out.append({"drop": drop, "images": 0 if manifest is None else len(manifest.images),
                            "indexed": counts[drop], "briefs": len(read_briefs(art)),
                            "campaign_images": len(campaign_pngs(art))})
            return out

        return self._remember(("drop facts",), compute)

    def _sidecar(self, entry: listing.Entry) -> dict:
        """A campaign image's sidecar, read again only when the listing shows it changed."""
        key = (str(entry.path), entry.version)
        with self._sidecar_lock:
            if key in self._sidecars:
                return self._sidecars[key]
        doc = read_json(entry.path, {}) or {}
        with self._sidecar_lock:
            self._sidecars[key] = doc
        return doc

    def detail(self, drop: str) -> dict:
        """The drop's counts, its briefs with their references, its campaign images with their sidecar facts
        and lineage (references, base image, the image a revision was made from and its note), which campaign
        images each product picture went into, and which contact sheets exist."""
        art = self._art(drop)
        refs = read_references(art)
        # The listing is seconds-old at most, like the drops' facts: a new image shows on the next look.
        files = self._remember(("campaign files", drop), lambda: {e.rel: e for e in listing.list_files(campaign_dir(art))})
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
                "revision": facts.get("revision"), "channels": brief.get("channels") or [],
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

    def sheet(self, drop: str, name: str) -> bytes:
        if name not in SHEETS:
            raise BadRequest("name", f"must be one of {', '.join(SHEETS)}, got {name!r}")
        try:
            return storage.read_bytes(self._art(drop).sheet_path(name))
        except FileNotFoundError:
            raise BadRequest("name", f"drop {drop!r} has no {name} contact sheet yet") from None
