"""The duplicates stage: groups of a drop's pictures that are the same shot, and, separately, pictures that
are near-identical to the CLIP model. Nothing is deleted: people decide, search shows one of a group.

- **Same shot**: a perceptual hash (imagehash's pHash on the grey image) of the whole picture and of five
  90% crops (centre and corners); two pictures are the same shot when the whole of one is within
  SAME_SHOT_MAX_BITS of the whole of the other or of one of its crops. Robust to re-encoding, resizing and
  small crops (a crop of a picture is a crop-sized part of it), and, since the hash sees only grey
  structure, the same two parts' mean colours differ by at most COLOUR_MAX_DIFF in each channel (a red
  and a yellow circle at one place hash alike). Files with the same bytes are the same
  shot without hashing. A blank picture (one grey level) hashes like every other blank one: it is listed
  apart, never grouped.
- **Near-identical**: among the same-shot groups' first pictures and the others, pairs whose CLIP vectors
  (the serving model's, already stored) are at least NEAR_IDENTICAL_MIN alike: another shot of the same
  thing, or an edit.

Files: duplicates.json (the groups, and each content's hashes so an unchanged picture is never read again),
in the serving model's files (the near-identical groups are that model's).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import imagehash
import numpy as np

from ...domain.artifacts import DropArtifacts, digest
from ...domain.drops import load_rgb
from ...domain.record import StageRecord

FILE = "duplicates.json"
FILES = (FILE,)
SAME_SHOT_MAX_BITS = 5  # of pHash's 64: a re-encode or resize moves 0-4; distinct pictures 6 or more
NEAR_IDENTICAL_MIN = 0.95  # cosine of the CLIP vectors
CROPS = ((0.05, 0.05, 0.95, 0.95), (0, 0, 0.9, 0.9), (0.1, 0, 1, 0.9), (0, 0.1, 0.9, 1), (0.1, 0.1, 1, 1))
COLOUR_MAX_DIFF = 16  # of 255, per channel of the mean colour: re-encodes and crops move it a few levels
# Pixels a picture is decoded to (at least) before hashing: pHash looks at 32x32. 112 lets a 900-pixel side
# decode at JPEG's 1/8 scale; 128 needed 1/4, and hashing a picture cost twice as much.
HASH_SIDE = 112
PROCESSES_FROM = 1000  # pictures to hash before processes pay for their start
BLOCK = 1024  # rows compared at once (BLOCK x pictures distances and colours in memory)


@dataclass
class DuplicatesReport:
    same_shot: list[list[str]] = field(default_factory=list)  # paths, each group sorted, groups by first path
    near_identical: list[list[str]] = field(default_factory=list)
    blank: list[str] = field(default_factory=list)
    hashed: int = 0  # pictures read and hashed in this run
    key: str = ""
    changed: bool = True

    def to_dict(self) -> dict:
        return {"same_shot": self.same_shot, "near_identical": self.near_identical, "blank": self.blank}


def shot_hashes(source) -> list[str] | None:
    """The pHash of the picture and of its five crops (hex), then the mean colour of each (rrggbb); None
    for a blank picture."""
    rgb = load_rgb(source, min_side=HASH_SIDE)
    if min(rgb.size) > HASH_SIDE:  # pHash looks at 32x32: a small copy hashes alike, several times faster
        rgb = rgb.reduce(max(1, min(rgb.size) // HASH_SIDE))
    grey = rgb.convert("L")
    lo, hi = grey.getextrema()
    if hi - lo <= 2:
        return None
    w, h = grey.size
    boxes = [(0, 0, w, h)] + [(int(a * w), int(b * h), int(c * w), int(d * h)) for a, b, c, d in CROPS]
    # Box means from one summed-area table: O(1) a box.
    table = np.zeros((h + 1, w + 1, 3), np.float64)
    table[1:, 1:] = np.asarray(rgb, np.float64).cumsum(0).cumsum(1)
    colours = ["%02x%02x%02x" % tuple(int(round(v)) for v in
                                      (table[b, r] - table[t, r] - table[b, l] + table[t, l]) / ((b - t) * (r - l)))
               for l, t, r, b in boxes]
    return [str(imagehash.phash(grey.crop(box))) for box in boxes] + colours


def _groups(n: int, pairs) -> list[list[int]]:
    """The connected groups (two or more) of n items joined by `pairs`."""
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    found: dict[int, list[int]] = {}
    for i in range(n):
        found.setdefault(root(i), []).append(i)
    return [g for g in found.values() if len(g) > 1]


def _words(hexes: list[str]) -> np.ndarray:
    return np.array([int(x, 16) for x in hexes], np.uint64)


def same_shot_pairs(hashes: list[list[str]]) -> list[tuple[int, int]]:
    """Pairs (i < j) of pictures whose parts match, whole to whole or whole to a crop either way: pHash
    within SAME_SHOT_MAX_BITS and mean colour within COLOUR_MAX_DIFF, of the same two parts."""
    parts = len(CROPS) + 1
    words = [_words([h[k] for h in hashes]) for k in range(parts)]
    colours = [np.array([list(bytes.fromhex(h[parts + k])) for h in hashes], np.int16) for k in range(parts)]
    combos = [(0, 0)] + [(0, k) for k in range(1, parts)] + [(k, 0) for k in range(1, parts)]
    found = set()
    for start in range(0, len(hashes), BLOCK):
        rows = slice(start, start + BLOCK)
        for a, b in combos:  # part a of these rows against part b of every picture
            close = np.bitwise_count(words[a][rows, None] ^ words[b][None, :]) <= SAME_SHOT_MAX_BITS
            i, j = np.nonzero(close)
            i = i + start
            keep = (i != j) & (np.abs(colours[a][i] - colours[b][j]).max(axis=1) <= COLOUR_MAX_DIFF)
            found.update((min(x, y), max(x, y)) for x, y in zip(i[keep].tolist(), j[keep].tolist()))
    return sorted(found)


def near_pairs(vectors: np.ndarray) -> list[tuple[int, int]]:
    pairs = []
    for start in range(0, len(vectors), BLOCK):
        sims = vectors[start:start + BLOCK] @ vectors.T
        i, j = np.nonzero(sims >= NEAR_IDENTICAL_MIN)
        pairs += [(a + start, b) for a, b in zip(i.tolist(), j.tolist()) if a + start < b]
    return pairs


def find_duplicates(folder, files: DropArtifacts, images: list[tuple[str, str]],
                    load_vectors: Callable[[], dict[str, np.ndarray]], model_id: str | None,
                    workers: int = min(4, os.cpu_count() or 1)) -> DuplicatesReport:
    """`folder`: the drop's; `images`: (path, sha256) of its valid pictures; `load_vectors()`: sha256 -> the
    serving model's vector (read only when something changed)."""
    key = digest({"images": sorted(images), "model": model_id, "rules": [SAME_SHOT_MAX_BITS, NEAR_IDENTICAL_MIN,
                                                                         CROPS, HASH_SIDE, COLOUR_MAX_DIFF]})
    record = StageRecord(files, FILE)
    if record.kept(key):
        last = record.last
        return DuplicatesReport(last["same_shot"], last["near_identical"], last["blank"], 0, key, changed=False)
    # Hashes made by other rules (crops, decoding size) are made again.
    rules = digest([CROPS, HASH_SIDE, "phash+colour"])
    known = record.last.get("hashes", {}) if record.last.get("hash_rules") == rules else {}
    by_sha: dict[str, list[str]] = {}
    for path, sha in sorted(images):
        by_sha.setdefault(sha, []).append(path)
    todo = [sha for sha in by_sha if sha not in known]
    fresh = dict(zip(todo, hash_all([folder / by_sha[sha][0] for sha in todo], workers)))
    hashes = {sha: (fresh[sha] if sha in fresh else known[sha]) for sha in by_sha}
    report = DuplicatesReport(hashed=len(todo), key=key)
    report.blank = sorted(p for sha, h in hashes.items() if h is None for p in by_sha[sha])
    shas = [sha for sha in sorted(by_sha, key=lambda s: by_sha[s][0]) if hashes[sha] is not None]
    groups = _groups(len(shas), same_shot_pairs([hashes[s] for s in shas])) if shas else []
    grouped = {shas[i] for g in groups for i in g}
    shots = [sorted(p for i in g for p in by_sha[shas[i]]) for g in groups]
    shots += [by_sha[s] for s in shas if s not in grouped and len(by_sha[s]) > 1]  # the same bytes, several names
    report.same_shot = sorted(shots)
    # Near-identical: one picture per shot (its group's first), compared by vector.
    members = {p for g in report.same_shot for p in g} - {g[0] for g in report.same_shot}
    vectors = load_vectors() if shas else {}
    keep = [sha for sha in shas if by_sha[sha][0] not in members and sha in vectors]
    if len(keep) > 1:
        near = _groups(len(keep), near_pairs(np.stack([vectors[s] for s in keep])))
        report.near_identical = sorted(sorted(by_sha[keep[i]][0] for i in g) for g in near)
    record.write(key, **report.to_dict(), hashes=hashes, hash_rules=rules)
    return report


def hash_all(sources: list, workers: int) -> list:
    """shot_hashes of each source: on `workers` processes for a large drop (the hashing holds the GIL
    between decodes), on threads for a small one (a process costs about a second to start)."""
    if len(sources) >= PROCESSES_FROM and workers > 1:
        # spawn, not fork: the step's process may hold threads (torch, Milvus Lite) that fork would copy
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(shot_hashes, sources, chunksize=64))
    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL decodes and resizes outside the GIL
        return list(pool.map(shot_hashes, sources))


def read_duplicates(files: DropArtifacts) -> dict:
    return files.read_json(FILE, {}) or {}


def collapse_index(files: DropArtifacts) -> dict[str, str]:
    """path -> the first path of its same-shot group, for the drop's grouped pictures (search shows one)."""
    return {p: g[0] for g in read_duplicates(files).get("same_shot", []) for p in g}



def collapse(hits: list, groups_of: Callable[[str], dict[str, str]], limit: int) -> list:
    """`hits` (best first, each with `drop` and `path`) with one picture per same-shot group: the best-ranked
    one; at most `limit`. `groups_of(drop)`: that drop's collapse_index."""
    seen, out = set(), []
    for h in hits:
        key = (getattr(h, "kind", "product"), h.drop,
               groups_of(h.drop).get(h.path, h.path) if getattr(h, "kind", "product") == "product" else h.path)
        if key not in seen:
            seen.add(key)
            out.append(h)
    return out[:limit]
