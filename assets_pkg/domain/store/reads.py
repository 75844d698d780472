"""Reading and searching a collection: a drop's rows page by page, counts, filter values, and search (CLIP,
an exact SKU, and Milvus's hybrid of CLIP and BM25), each hit with the similarity a person can read."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Sequence

import numpy as np

from ..errors import StoreError
from ..products import SKU_RE
from .rows import (HIT_FIELDS, MAX_TOP_K, MIN_CANDIDATES, PRODUCT_FIELDS, RRF_K, SCORE_FIELDS, SPARSE, Hit, RowFacts,
                   drop_filter, filter_expr, stored_facts)


class Reads:
    def _pages(self, collection: str, filter: str, fields: list[str]):
        it = self._call("query_iterator", self.client.query_iterator, collection, batch_size=1000,
                        filter=filter, output_fields=fields)
        try:
            while True:
                page = self._call("query page", it.next)
                if not page:
                    break
                yield page
        finally:
            it.close()

    def rows_of_drop(self, drop: str) -> dict[str, RowFacts]:
        """id -> facts (path, aliases, product fields) of every row of a drop, read page by page."""
        if not self.exists():
            return {}
        have = set(self._fields())
        fields = ["id", "path", "aliases", *(f for f in (*PRODUCT_FIELDS, *SCORE_FIELDS) if f in have)]
        return {r["id"]: stored_facts(r) for page in self._pages(self.collection, drop_filter(drop), fields)
                for r in page}

    def ids_of_drop(self, drop: str) -> set[str]:
        if not self.exists():
            return set()
        return {r["id"] for page in self._pages(self.collection, drop_filter(drop), ["id"]) for r in page}

    def count(self, drop: str | None = None) -> int:
        if not self.exists():
            return 0
        res = self._call(
            "count",
            self.client.query,
            self.collection,
            filter=drop_filter(drop) if drop else "",
            output_fields=["count(*)"],
        )
        return int(res[0]["count(*)"])

    def values(self, field: str, drop: str | None = None) -> dict[str, int]:
        """value -> rows, of one product field (non-empty values), for filter controls."""
        counts: dict[str, int] = {}
        if not self.exists() or field not in self._fields():
            return counts
        for page in self._pages(self.collection, filter_expr(drop), [field]):
            for r in page:
                if r[field]:
                    counts[r[field]] = counts.get(r[field], 0) + 1
        return dict(sorted(counts.items()))

    def search(self, vectors: np.ndarray, drop: str | None = None, top_k: int = 10,
               texts: Sequence[str] | None = None, where: dict | None = None) -> list[list[Hit]]:
        """The `top_k` best rows for each query vector (CLIP), filtered by drop and `where` (sku, category,
        color). With `texts` (the queries the vectors came from), each search is also a full-text one: rows
        whose SKU is the query come first, then Milvus fuses CLIP and BM25 (where the collection has it)."""
        if not 1 <= top_k <= MAX_TOP_K:
            raise StoreError(f"top_k must be from 1 to {MAX_TOP_K}, got {top_k}")
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        expr = filter_expr(drop, where)
        if not self.exists():
            return [[] for _ in vectors]
        have = self.dim()
        if have is not None and vectors.shape[1] != have:
            raise StoreError(f"collection {self.collection!r} at {self.uri} holds {have}-d vectors but the query is "
                             f"{vectors.shape[1]}-d: CLIP_MODEL is not the model the collection was built with (set "
                             f"it back, or run the drops with this model into a new MILVUS_COLLECTION)")
        fields = HIT_FIELDS if "sku" in self._fields() else HIT_FIELDS[:3]
        if texts is None:
            return [[Hit.from_milvus(h, "clip") for h in hits] for hits in self._dense(vectors, expr, top_k, fields)]
        out = []
        for vector, text in zip(vectors, texts):
            pinned = self._exact_sku(vector, text, expr, top_k, fields)
            if self.full_text and text.strip():
                rest = self._hybrid(vector, text, expr, top_k + len(pinned), fields)
            else:
                rest = [Hit.from_milvus(h, "clip") for h in self._dense(vector[None], expr, top_k + len(pinned),
                                                                        fields)[0]]
            seen = {h.id for h in pinned}
            out.append((pinned + [h for h in rest if h.id not in seen])[:top_k])
        return out

    def _dense(self, vectors: np.ndarray, expr: str, limit: int, fields: list[str]) -> list:
        return self._call("search", self.client.search, self.collection, data=vectors.tolist(), anns_field="vector",
                          limit=limit, filter=expr, output_fields=fields, search_params={"metric_type": "COSINE"})

    def _exact_sku(self, vector: np.ndarray, text: str, expr: str, top_k: int, fields: list[str]) -> list[Hit]:
        """Rows whose SKU is the query itself (any case), best CLIP match first."""
        token = text.strip()
        if "sku" not in fields or not SKU_RE.fullmatch(token):
            return []
        skus = json.dumps(sorted({token, token.upper(), token.lower()}))
        sku_expr = f"sku in {skus}" + (f" and {expr}" if expr else "")
        return [Hit.from_milvus(h, "sku") for h in self._dense(vector[None], sku_expr, top_k, fields)[0]]

    def _hybrid(self, vector: np.ndarray, text: str, expr: str, limit: int, fields: list[str]) -> list[Hit]:
        """CLIP's and BM25's best `candidates` each, fused by reciprocal rank (`fuse_ranks`). Two searches
        and the fusion here, not one `hybrid_search`: Milvus Lite's took 42 ms at 1,000,000 rows where its
        two halves took 12 and 9 ms (benchmarks/search_latency.py). Only BM25's candidates bring their
        vectors (a picture's similarity to the query); CLIP's similarity is its search's own score."""
        candidates = min(max(4 * limit, MIN_CANDIDATES), 16384)
        pictures, words = (
            self._call("search", self.client.search, self.collection, data=[query], anns_field=field,
                       limit=candidates, filter=expr, output_fields=[*fields, "text", *extra],
                       search_params={"metric_type": metric})[0]
            for query, field, metric, extra in ((vector.tolist(), "vector", "COSINE", ()),
                                                (text, SPARSE, "BM25", ("vector",))))
        cosine = {h["id"]: float(h["distance"]) for h in pictures}

        def similarity(hit: dict) -> float:  # a hit only BM25 found is one of its candidates, with its vector
            if hit["id"] in cosine:
                return cosine[hit["id"]]
            return float(np.dot(np.asarray(hit["entity"]["vector"], dtype=np.float32), vector))

        return explain_hybrid(text, [(Hit.from_milvus(h, "hybrid"), h["entity"].get("text") or "", similarity(h))
                                     for h in fuse_ranks([pictures, words], limit)])


def fuse_ranks(rankings: Sequence[Sequence[dict]], limit: int, k: int = RRF_K) -> list[dict]:
    """Milvus's `RRFRanker` on the client: a hit's score is the sum over rankings of 1 / (k + its rank
    there), ranks from 1; equal scores keep the order of the first ranking that holds them (CLIP's)."""
    scores: dict[str, float] = {}
    first: dict[str, dict] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit["id"]] = scores.get(hit["id"], 0.0) + 1.0 / (k + rank)
            first.setdefault(hit["id"], hit)
    best = sorted(first, key=lambda i: -scores[i])[:limit]  # stable: ties stay in the order first seen
    return [{**first[i], "distance": scores[i]} for i in best]


_WORDS = re.compile(r"\w+")


def query_words(text: str) -> set[str]:
    """The words BM25 compares (Milvus's standard analyzer: Unicode words, lower case)."""
    return {w.lower() for w in _WORDS.findall(text)}


def explain_hybrid(text: str, hits: list[tuple["Hit", str, float]]) -> list["Hit"]:
    """Each fused hit (with its row's text and its picture's similarity to the query) and why it was found,
    in the fused order. A hit none of whose words the query holds was found by its picture alone; one with
    the query's words is also a picture match when its picture is at least as like the query as such a hit."""
    asked = query_words(text)
    scored = [(hit, tuple(sorted(asked & query_words(row_text))), similarity) for hit, row_text, similarity in hits]
    by_picture = [s for _, words, s in scored if not words]
    floor = min(by_picture) if by_picture else float("inf")
    out = []
    for hit, words, similarity in scored:
        why = (("words",) if words else ()) + (("picture",) if not words or similarity >= floor else ())
        out.append(replace(hit, similarity=similarity, why=why, words=words))
    return out
