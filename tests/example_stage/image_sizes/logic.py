"""The image-sizes stage: how many of a drop's images are landscape, portrait or square (no Dagster).

Files: image-sizes.json (the counts, under the key of the manifest they were counted from).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from assets_pkg.domain.artifacts import DropArtifacts
from assets_pkg.domain.record import StageRecord, inputs_key
from assets_pkg.stages.scan.logic import read_manifest

FILES = ("image-sizes.json",)


@dataclass(frozen=True)
class SizesReport:
    key: str
    orientations: dict[str, int]
    counted: bool  # False: the manifest is unchanged, the counts were kept


def orientation(width: int, height: int) -> str:
    return "square" if width == height else "landscape" if width > height else "portrait"


def count_sizes(art: DropArtifacts) -> SizesReport:
    manifest = read_manifest(art)  # the scan stage's output, read through the scan stage
    key = inputs_key(manifest=manifest.key)
    record = StageRecord(art, "image-sizes.json")
    if kept := record.kept(key):
        return SizesReport(key, kept["orientations"], counted=False)
    counts = Counter(orientation(w, h) for w, h in zip(manifest.images["width"], manifest.images["height"]))
    record.write(key, orientations=dict(sorted(counts.items())))
    return SizesReport(key, dict(sorted(counts.items())), counted=True)
