"""What a search asks beyond its words, the same in the CLI, the API and the page: terms to push out
(`red dress -floral`, `--not floral`, `not=floral`), a floor on how like the query a picture must be
(`--min-similarity`, `min_similarity=`), a picture with words ("this bag, in black": the picture's
vector and the words' added), and the order of the results (`--sort added`, `sort=added`: the same results,
the file added last first).

A hit is pushed out by a negative term when the term is a word of its name, category, colour, SKU or file
name, or when its picture is among the results most like the term: its similarity to the term (by the
stored vector) is at or above the midpoint between the least and the most like it of the results found
(the numbers mean different things for different models; the results' own spread does not). Results that
all look alike to the term (a spread under NEGATIVE_SPREAD) are not pushed by it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

MAX_NEGATIVES = 8
SORTS = ("relevance", "added")  # the fused rank (default), or when each picture's file was added, newest first
NEGATIVE_SPREAD = 0.1  # cosine: below this, no result is more like the negative term than the others
WORD = re.compile(r"[0-9a-z]+")


class InvalidQuery(ValueError):
    """The message starts with the parameter's name (`q`, `not`, `min_similarity`)."""


@dataclass(frozen=True)
class Query:
    words: str  # what is searched for, the negative terms taken out
    negatives: tuple[str, ...] = ()
    min_similarity: float | None = None
    sort: str = SORTS[0]

    @property
    def refines(self) -> bool:
        return bool(self.negatives) or self.min_similarity is not None


def parse_query(raw: str, not_terms: Sequence[str] = (), min_similarity: str | float | None = None,
                with_picture: bool = False, sort: str | None = None) -> Query:
    """`raw` with its `-term`s taken out as negatives, beside `not_terms` (each may hold several words)."""
    kept, negatives = [], []
    for token in (raw or "").split():
        (negatives if token.startswith("-") and len(token) > 1 else kept).append(token.lstrip("-") if
                                                                                 token.startswith("-") else token)
    for term in not_terms:
        negatives += [t for t in str(term).replace(",", " ").split() if t]
    negatives = list(dict.fromkeys(n.lower() for n in negatives))
    if len(negatives) > MAX_NEGATIVES:
        raise InvalidQuery(f"not: at most {MAX_NEGATIVES} terms to push out, got {len(negatives)}")
    if not kept and not with_picture:
        raise InvalidQuery("q: say what to find, not only what to leave out" if negatives else "q: missing or empty")
    floor = None
    if min_similarity not in (None, ""):
        try:
            floor = float(min_similarity)
        except (TypeError, ValueError):
            floor = float("nan")
        if not -1.0 <= floor <= 1.0:
            raise InvalidQuery(f"min_similarity: a cosine similarity from -1 to 1, got {str(min_similarity)[:20]!r}")
    if sort in (None, ""):
        sort = SORTS[0]
    if sort not in SORTS:
        raise InvalidQuery(f"sort: {' or '.join(SORTS)}, got {str(sort)[:20]!r}")
    return Query(" ".join(kept), tuple(negatives), floor, sort)


def newest_first(hits: list, added: Sequence[float | None]) -> list:
    """`hits` (best first) ordered by `added` (when each one's file was added), newest first; hits added at
    the same moment keep their fused order, and those whose time is unknown come last."""
    order = sorted(range(len(hits)), key=lambda i: (added[i] is None, -(added[i] or 0.0)))
    return [hits[i] for i in order]


def with_words(picture: np.ndarray, words: np.ndarray) -> np.ndarray:
    """One query from a picture and words: the sum of their unit vectors, made unit again."""
    v = np.asarray(picture, np.float32).reshape(-1) + np.asarray(words, np.float32).reshape(-1)
    return v / (np.linalg.norm(v) or 1.0)


def _words_of(hit) -> set[str]:
    text = " ".join((hit.name, hit.category, hit.color, hit.sku, hit.path)).lower()
    return set(WORD.findall(text))


def refine(hits: list, query: Query, negative_vectors: np.ndarray | None,
           vectors_of: Callable[[list[str]], dict[str, np.ndarray]], limit: int) -> list:
    """`hits` (best first) without those under the floor or pushed out by a negative term; at most `limit`.
    `negative_vectors`: the negative terms' text vectors; `vectors_of(ids)`: the hits' stored vectors."""
    if query.min_similarity is not None:
        hits = [h for h in hits if h.similarity >= query.min_similarity]
    if query.negatives and hits:
        vectors = vectors_of([h.id for h in hits])
        pushed = {h.id for h in hits if set(query.negatives) & _words_of(h)}
        known = [h for h in hits if h.id in vectors]
        if negative_vectors is not None and known:
            sims = np.stack([vectors[h.id] for h in known]) @ np.asarray(negative_vectors, np.float32).T
            for column in sims.T:  # each negative term on its own
                low, high = float(column.min()), float(column.max())
                if high - low >= NEGATIVE_SPREAD:
                    pushed |= {h.id for h, s in zip(known, column) if s >= (low + high) / 2}
        hits = [h for h in hits if h.id not in pushed]
    return hits[:limit]
