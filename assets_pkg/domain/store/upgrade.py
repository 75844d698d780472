"""A collection of an earlier schema (written before the product fields existed, `FIELDS_V1`, or a campaign
collection before its rows held the images' scores) brought to the schema of today in place, vectors and
all, the first time it is opened for writing: no image is encoded again."""

from __future__ import annotations

import json
import logging

from ..milvus import display_uri
from ..products import search_text
from .rows import FIELDS, NO_PRODUCT, NO_SCORES, PRODUCT_FIELDS, SCORE_FIELDS

FIELDS_V1 = ("id", "drop", "sha256", "path", "aliases", "width", "height", "vector")


class SchemaUpgrade:
    def _upgrade(self, dim: int, upgrade: str, to: str) -> None:
        """Copy a collection of the previous schema into the new one under the same name, vectors and all:
        first into `<collection>_upgrade`, then back once the old one is dropped, so a stop at any point
        loses nothing (the next opening finishes the job)."""
        log = logging.getLogger(__name__)
        log.warning("upgrading Milvus collection %s at %s to %s (no image is encoded again)", self.collection,
                    display_uri(self.uri), to)
        if self.exists(upgrade):
            self._call("drop_collection", self.client.drop_collection, upgrade)
        self._create(upgrade, dim)
        self._copy(self.collection, upgrade)
        self._call("drop_collection", self.client.drop_collection, self.collection)
        self._full_text = self._schema = None
        self._create(self.collection, dim)
        self._copy(upgrade, self.collection)
        self._call("drop_collection", self.client.drop_collection, upgrade)

    def _copy(self, source: str, target: str) -> None:
        self._call("load_collection", self.client.load_collection, source)
        have = set(self._fields(source))
        scored = SCORE_FIELDS[0] in self._fields(target)
        fields = [f for f in (*FIELDS, *SCORE_FIELDS) if f in have]
        for page in self._pages(source, "", fields):
            rows = []
            for r in page:
                aliases = json.loads(r.get("aliases") or "[]")
                row = {f: r.get(f) for f in FIELDS if f in have}
                row.update({f: r.get(f, NO_PRODUCT[f]) for f in PRODUCT_FIELDS})
                row["text"] = r.get("text") or search_text(r["path"], aliases, None)
                if scored:
                    row.update({f: r.get(f, none) for f, none in zip(SCORE_FIELDS, NO_SCORES)})
                rows.append(row)
            self._call("upsert", self.client.upsert, target, rows)
        self._call("flush", self.client.flush, target)
