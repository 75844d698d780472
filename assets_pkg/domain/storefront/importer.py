"""A drop made from a store's export: the export copied into the drop's folder, each picture it names fetched
into `pictures/` (conditionally when fetched before), and `products.csv` written from the export, so the drop
is an ordinary drop to every stage, search and the page. The drop's folder may be local or in a bucket
(domain/storage.py): every read, write and delete goes through the same functions as the stages'.

State in the drop folder: `.store-pictures.json` (hidden, so not a file of the drop): URL -> file, ETag,
Last-Modified. A URL gone from the export, or answering 404 or 410, takes its picture out of the drop; one that
fails otherwise keeps the picture fetched before."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import listing, storage
from ..storage import AnyPath
from .fetch import NO_ANSWER, fetch
from .exports import Picture, read_export

STATE = ".store-pictures.json"
# The export as the drop keeps it: a drop folder holding one of these is refreshed from it by every scan, and the
# sensor sees a changed export as a changed drop (domain/drops.py's fingerprint names them).
EXPORT_NAMES = ("store-export.csv", "store-export.tsv", "store-export.txt", "store-export.xml")
PICTURES = "pictures"
IN_FLIGHT = 16  # downloads at once: enough to hide a store CDN's latency, few enough not to be throttled
EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff"}


@dataclass
class ImportReport:
    kind: str
    pictures: int = 0
    fetched: int = 0
    unchanged: int = 0
    removed: int = 0
    bytes: int = 0
    failed: list[str] = field(default_factory=list)  # one line each: the row, the URL, why
    unanswered: int = 0  # of those, URLs whose server did not answer at all
    rejected: list[str] = field(default_factory=list)  # rows of the export that cannot be read


def _file_name(picture: Picture, fmt: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", picture.sku or picture.name).strip("-.")[:60] or "picture"
    return f"{PICTURES}/{stem}-{hashlib.sha256(picture.url.encode()).hexdigest()[:10]}{EXTENSIONS.get(fmt, '.img')}"


def _read_if_there(path: AnyPath) -> bytes | None:
    try:
        return storage.read_bytes(path)
    except FileNotFoundError:
        return None


def _write_if_changed(path: AnyPath, text: str) -> None:
    if _read_if_there(path) != text.encode():
        storage.write_atomic(path, text.encode())


def _same_file(a: AnyPath, b: AnyPath) -> bool:
    if storage.is_remote(a) or storage.is_remote(b):
        return str(a) == str(b)
    return a.resolve() == b.resolve()


def export_of(folder: AnyPath, entries: list[listing.Entry] | None = None) -> AnyPath | None:
    """The store export a drop folder keeps, if any (from `entries`, its listing, when the caller has it)."""
    if entries is None and not storage.is_remote(folder):
        return next((folder / n for n in EXPORT_NAMES if (folder / n).is_file()), None)
    names = {e.rel for e in (listing.list_files(folder) if entries is None else entries)}
    return next((folder / n for n in EXPORT_NAMES if n in names), None)


def import_export(export: AnyPath, folder: AnyPath, allow: frozenset[str], max_bytes: int, max_pixels: int,
                  in_flight: int = IN_FLIGHT) -> ImportReport:
    data = storage.read_bytes(export)
    parsed = read_export(export.name, data)
    suffix = export.suffix.lower()
    kept = folder / (f"store-export{suffix}" if f"store-export{suffix}" in EXPORT_NAMES else "store-export.csv")
    if not _same_file(export, kept):
        for other in EXPORT_NAMES:  # one export per drop
            storage.remove(folder / other)
        storage.write_atomic(kept, data)
    report = ImportReport(parsed.kind, rejected=[f"{export.name}:{r['line']}: {r['field'] + ': ' if r['field'] else ''}"
                                                 f"{r['reason']}" for r in parsed.rejected])
    state_path = folder / STATE
    state = json.loads(_read_if_there(state_path) or b"{}")
    present = {e.rel for e in listing.list_files(folder)} if storage.is_folder(folder) else set()  # one listing
    wanted: dict[str, Picture] = {}
    for picture in parsed.pictures:
        wanted.setdefault(picture.url, picture)

    def one(url: str):
        known = state.get(url, {})
        if known and known["file"] not in present:
            known = {}
        return url, fetch(url, allow, max_bytes, max_pixels, known.get("etag", ""), known.get("last_modified", ""))

    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        results = list(pool.map(one, wanted))
    for url, got in results:
        picture = wanted[url]
        if got.status == "fetched":
            name = _file_name(picture, got.format)
            old = state.get(url, {}).get("file")
            if old and old != name:
                storage.remove(folder / old)
            storage.write_atomic(folder / name, got.data)
            state[url] = {"file": name, "etag": got.etag, "last_modified": got.last_modified}
            report.fetched += 1
            report.bytes += len(got.data)
        elif got.status == "unchanged":
            report.unchanged += 1
        else:
            report.failed.append(f"{export.name}:{picture.line}: {url}: {got.reason}")
            report.unanswered += got.reason.startswith(NO_ANSWER)
            if got.status == "gone" and url in state:
                storage.remove(folder / state.pop(url)["file"])
                report.removed += 1
    for url in [u for u in state if u not in wanted]:  # no longer in the export
        storage.remove(folder / state.pop(url)["file"])
        report.removed += 1
    _write_if_changed(state_path, json.dumps(state, indent=1, sort_keys=True))
    rows = [wanted[url].catalog_row(entry["file"]) for url, entry in state.items()]
    columns = ["file", "sku", "name", "category", "color", "tags", *parsed.attribute_names()]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["file"]))
    # Rewritten only when it changes: its modification time (or ETag) is in the drop's fingerprint, and a
    # refresh that touched it would make the sensor run the drop again after every run.
    _write_if_changed(folder / "products.csv", out.getvalue())
    report.pictures = len(state)
    return report
