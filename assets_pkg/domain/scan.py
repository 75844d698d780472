"""The scan stage: a drop folder's manifest (valid images with content hashes; rejected files with reasons).

Files whose size and version (modification time, or an object's ETag) are unchanged keep their row or
their rejection without being read again, and an unchanged manifest is not rewritten, so re-scanning an
unchanged drop costs one listing, on disk or in a bucket.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .artifacts import DropArtifacts
from .drops import Manifest, ProductDrop, scan_drop


@dataclass(frozen=True)
class ScanReport:
    manifest: Manifest
    changed: bool  # whether manifest.parquet / rejected.json were rewritten
    seconds: float


def update_manifest(drop: ProductDrop, art: DropArtifacts, max_pixels: int) -> ScanReport:
    start = time.perf_counter()
    previous = art.read_manifest()
    manifest = scan_drop(drop, previous.images if previous else None, max_pixels=max_pixels,
                         previous_rejected=previous.rejected if previous else [])
    changed = previous is None or previous.rejected != manifest.rejected or not previous.images.equals(manifest.images)
    if changed:
        art.write_manifest(manifest)
    return ScanReport(manifest, changed, time.perf_counter() - start)
