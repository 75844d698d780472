"""The scan stage: a drop folder's manifest (valid images with content hashes; rejected files with reasons).

Files: manifest.parquet (path, sha256, width, height, format, bytes, version of each valid image) and
rejected.json ([{file, reason}], with bytes and version for a verdict on the content).

Files whose size and version (modification time, or an object's ETag) are unchanged keep their row or
their rejection without being read again, and an unchanged manifest is not rewritten, so re-scanning an
unchanged drop costs one listing, on disk or in a bucket.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pandas as pd

from ...domain import listing, storage, upgrade
from ...domain.artifacts import DropArtifacts, digest, read_parquet
from ...domain.drops import ProductDrop, decode_problem, image_entries
from ...domain.errors import StudioError
from ...domain.settings import DEFAULTS
from ...domain.listing import Entry
from ...domain.storage import write_atomic

FILES = ("manifest.parquet", "rejected.json")
MANIFEST_COLUMNS = ["path", "sha256", "width", "height", "format", "bytes", "version"]


@dataclass
class Manifest:
    """Valid images of a drop (one row per file) and rejected files with reasons."""

    images: pd.DataFrame
    rejected: list[dict] = field(default_factory=list)  # [{"file": ..., "reason": ...}]

    @property
    def unique_images(self) -> pd.DataFrame:
        """One row per distinct content; `aliases` lists the other names of the same bytes."""
        df = self.images.sort_values("path")
        firsts = df.drop_duplicates("sha256", keep="first").copy()
        # Only contents stored under several names have aliases; grouping just those keeps this linear.
        shared = df[df["sha256"].duplicated(keep=False)]
        names = shared.groupby("sha256")["path"].agg(list).to_dict()
        firsts["aliases"] = [names.get(h, [None])[1:] for h in firsts["sha256"]]
        return firsts.reset_index(drop=True)

    @property
    def key(self) -> str:
        """What the stages after the scan depend on: each valid image's name, content and size, and each
        rejection. Not the files' versions: a file touched but unchanged changes nothing downstream."""
        content = self.images.drop(columns=["version"]).to_dict("records")
        return digest({"images": content, "rejected": [(r["file"], r["reason"]) for r in self.rejected]})


def read_manifest(art: DropArtifacts) -> Manifest | None:
    try:
        images = read_parquet(art / "manifest.parquet").to_pandas()
    except FileNotFoundError:
        return None
    if "version" not in images.columns:
        images = upgrade.manifest_without_versions(images, MANIFEST_COLUMNS)
    return Manifest(images=images, rejected=art.read_json("rejected.json", []))


def write_manifest(art: DropArtifacts, manifest: Manifest) -> None:
    write_atomic(art / "manifest.parquet", lambda tmp: manifest.images.to_parquet(tmp, index=False))
    art.write_json("rejected.json", manifest.rejected)


def _inspect(entry: Entry, max_pixels: int) -> dict:
    """Hash and fully decode one file; returns a manifest row or {"file", "reason"} (with "bytes" and
    "version" when the verdict is about the content, so an unchanged bad file is not read again)."""
    rel = entry.rel
    if entry.problem:
        return {"file": rel, "reason": entry.problem}
    if entry.size == 0:
        return {"file": rel, "reason": "empty file"}
    try:
        data = storage.read_bytes(entry.path)
    except OSError as e:
        return {"file": rel, "reason": f"unreadable: {e.strerror or e}"}
    verdict = decode_problem(data, max_pixels)
    if isinstance(verdict, str):
        return {"file": rel, "reason": verdict, "bytes": entry.size, "version": entry.version}
    w, h, fmt = verdict
    return {
        "path": rel,
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": int(w),
        "height": int(h),
        "format": str(fmt),
        "bytes": len(data),
        "version": entry.version,
    }


def scan_drop(
    drop: ProductDrop,
    previous: pd.DataFrame | None = None,
    max_pixels: int = DEFAULTS["MAX_IMAGE_PIXELS"],
    threads: int | None = None,
    previous_rejected: list[dict] = (),
) -> Manifest:
    """Build the manifest of a drop.

    Files whose size and version (modification time, or an object's ETag) match `previous` keep their row,
    and bad files in `previous_rejected` their verdict, without being read again: re-scanning an unchanged
    drop costs one listing.
    """
    if not storage.is_folder(drop.folder):
        raise StudioError(f"drop folder not found: {drop.folder}")
    known: dict[str, dict] = {}
    if previous is not None and len(previous):
        known = {r["path"]: r for r in previous.to_dict("records")}

    rows: list[dict] = []
    rejected: list[dict] = []
    todo: list[Entry] = []
    known_bad = {r["file"]: r for r in previous_rejected if "version" in r}
    for entry in image_entries(listing.list_files(drop.folder)):
        old, bad = known.get(entry.rel), known_bad.get(entry.rel)
        if old is not None and entry.problem is None and entry.size == old["bytes"] and entry.version == old["version"]:
            rows.append({k: old[k] for k in MANIFEST_COLUMNS})
        elif bad is not None and entry.problem is None and (entry.size, entry.version) == (bad["bytes"], bad["version"]):
            rejected.append(bad)
        else:
            todo.append(entry)

    # PIL releases the GIL while decoding, so threads give real parallelism here; an object store's
    # latency wants more requests in flight than there are cores.
    threads = threads or (4 if not storage.is_remote(drop.folder) else 16)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for result in pool.map(lambda e: _inspect(e, max_pixels), todo):
            (rejected if "reason" in result else rows).append(result)

    images = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).sort_values("path").reset_index(drop=True)
    return Manifest(images=images, rejected=sorted(rejected, key=lambda r: r["file"]))


@dataclass(frozen=True)
class ScanReport:
    manifest: Manifest
    changed: bool  # whether manifest.parquet / rejected.json were rewritten
    seconds: float

    @property
    def key(self) -> str:
        return self.manifest.key


def refresh_from_export(drop: ProductDrop, max_pixels: int) -> list[dict]:
    """A drop that keeps a store export: its pictures fetched again where they changed (one conditional
    request each) and its products.csv written; what could not be read or fetched, as rejections."""
    from ...domain.settings import setting
    from ...domain.storefront.exports import ExportError
    from ...domain.storefront.fetch import allowed_hosts
    from ...domain.storefront.importer import export_of, import_export

    export = export_of(drop.folder)
    if export is None:
        return []
    try:
        report = import_export(export, drop.folder, allowed_hosts(), setting("FETCH_MAX_BYTES"), max_pixels)
    except ExportError as e:
        return [{"file": export.name, "reason": str(e)}]
    if report.unanswered and report.unanswered == len(report.failed) and not (report.fetched or report.unchanged):
        # The store is down, not a picture missing: nothing is taken out of the drop, the run stops here.
        raise StudioError(f"{export.name}: the store did not answer for any of its {report.unanswered} pictures "
                          f"({report.failed[0].split(': ', 2)[1]}); the pictures fetched before are kept")
    return [{"file": export.name, "reason": line.removeprefix(f"{export.name}:")}
            for line in report.rejected + report.failed]


def update_manifest(drop: ProductDrop, art: DropArtifacts, max_pixels: int) -> ScanReport:
    start = time.perf_counter()
    from_export = refresh_from_export(drop, max_pixels)
    previous = read_manifest(art)
    manifest = scan_drop(drop, previous.images if previous else None, max_pixels=max_pixels,
                         previous_rejected=previous.rejected if previous else [])
    manifest.rejected = sorted(manifest.rejected + from_export, key=lambda r: (r["file"], r["reason"]))
    changed = previous is None or previous.rejected != manifest.rejected or not previous.images.equals(manifest.images)
    if changed:
        write_manifest(art, manifest)
    return ScanReport(manifest, changed, time.perf_counter() - start)
