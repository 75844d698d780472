"""Two models' answers to the same queries, side by side, for a person to judge before switching search.

Each query is searched in each model's own collection the way search answers it (CLIP fused with BM25 where
the collection has it, the brief's filters and drop); per query: the overlap of the two top k, the images only
one model found, and a contact sheet of both rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from PIL import Image

from .sheets import contact_sheet
from .store import Hit


@dataclass(frozen=True)
class Query:
    text: str
    drop: str | None = None  # a brief's query searches its own drop
    where: dict = field(default_factory=dict)
    source: str = "given"  # "given", or "<drop>/<brief id>"


@dataclass(frozen=True)
class Comparison:
    query: Query
    a: list[Hit]
    b: list[Hit]

    @staticmethod
    def _key(h: Hit) -> str:
        return f"{h.drop}/{h.path}"

    @property
    def overlap(self) -> float:
        """Share of the top k both models found (1.0: the same images, in any order)."""
        k = max(len(self.a), len(self.b))
        return len({self._key(h) for h in self.a} & {self._key(h) for h in self.b}) / k if k else 1.0

    @property
    def only_a(self) -> list[str]:
        theirs = {self._key(h) for h in self.b}
        return [self._key(h) for h in self.a if self._key(h) not in theirs]

    @property
    def only_b(self) -> list[str]:
        theirs = {self._key(h) for h in self.a}
        return [self._key(h) for h in self.b if self._key(h) not in theirs]

    def to_dict(self) -> dict:
        return {"query": self.query.text, "source": self.query.source, "drop": self.query.drop,
                "overlap": round(self.overlap, 3), "a": [self._key(h) for h in self.a],
                "b": [self._key(h) for h in self.b], "only_a": self.only_a, "only_b": self.only_b}


def compare(queries: Sequence[Query], search_a: Callable[[Query], list[Hit]],
            search_b: Callable[[Query], list[Hit]]) -> list[Comparison]:
    """Every query on model A, then every query on model B (each model's encoder is used in one go)."""
    a = [search_a(q) for q in queries]
    b = [search_b(q) for q in queries]
    return [Comparison(q, ha, hb) for q, ha, hb in zip(queries, a, b)]


def comparison_sheet(c: Comparison, image_of: Callable[[Hit], object], names: tuple[str, str]) -> Image.Image:
    """Two rows of thumbnails: model A's top k, then model B's; an image only one model found is marked `only`."""
    k = max(len(c.a), len(c.b), 1)
    only = (set(c.only_a), set(c.only_b))
    items = []
    for row, hits in enumerate((c.a, c.b)):
        cells = [(image_of(h), f"{'AB'[row]}#{i + 1}{' only' if c._key(h) in only[row] else ''} {h.path}")
                 for i, h in enumerate(hits)]
        blank = Image.new("RGB", (8, 8), (255, 255, 255))
        items += cells + [(blank, "")] * (k - len(cells))
    title = f"{c.query.text!r} ({c.query.source}): overlap {c.overlap:.0%}\nA = {names[0]}\nB = {names[1]}"
    return contact_sheet(items, cols=k, title=title)
