"""A drop made from a store's export: the export copied into the drop's folder, each picture it names fetched
into `pictures/` (conditionally when fetched before), and `products.csv` written from the export, so the drop
is an ordinary drop to every stage, search and the page.

State in the drop folder: `.store-pictures.json` (hidden, so not a file of the drop): URL -> file, ETag,
Last-Modified. A URL gone from the export, or answering 404 or 410, takes its picture out of the drop; one that
fails otherwise keeps the picture fetched before."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

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


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def export_of(folder: Path) -> Path | None:
    """The store export a drop folder keeps, if any."""
    return next((folder / n for n in EXPORT_NAMES if (folder / n).is_file()), None)


def import_export(export: Path, folder: Path, allow: frozenset[str], max_bytes: int, max_pixels: int,
                  in_flight: int = IN_FLIGHT) -> ImportReport:
    data = export.read_bytes()
    parsed = read_export(export.name, data)
    folder.mkdir(parents=True, exist_ok=True)
    kept = folder / f"store-export{export.suffix.lower() if f'store-export{export.suffix.lower()}' in EXPORT_NAMES else '.csv'}"
    if export.resolve() != kept.resolve():
        for other in EXPORT_NAMES:  # one export per drop
            (folder / other).unlink(missing_ok=True)
        shutil.copyfile(export, kept)
    report = ImportReport(parsed.kind, rejected=[f"{export.name}:{r['line']}: {r['field'] + ': ' if r['field'] else ''}"
                                                 f"{r['reason']}" for r in parsed.rejected])
    state_path = folder / STATE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    wanted: dict[str, Picture] = {}
    for picture in parsed.pictures:
        wanted.setdefault(picture.url, picture)

    def one(url: str):
        known = state.get(url, {})
        if known and not (folder / known["file"]).exists():
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
                (folder / old).unlink(missing_ok=True)
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            tmp = folder / (name + ".part")
            tmp.write_bytes(got.data)
            tmp.replace(folder / name)
            state[url] = {"file": name, "etag": got.etag, "last_modified": got.last_modified}
            report.fetched += 1
            report.bytes += len(got.data)
        elif got.status == "unchanged":
            report.unchanged += 1
        else:
            report.failed.append(f"{export.name}:{picture.line}: {url}: {got.reason}")
            report.unanswered += got.reason.startswith(NO_ANSWER)
            if got.status == "gone" and url in state:
                (folder / state.pop(url)["file"]).unlink(missing_ok=True)
                report.removed += 1
    for url in [u for u in state if u not in wanted]:  # no longer in the export
        (folder / state.pop(url)["file"]).unlink(missing_ok=True)
        report.removed += 1
    _write_if_changed(state_path, json.dumps(state, indent=1, sort_keys=True))
    rows = [wanted[url].catalog_row(entry["file"]) for url, entry in state.items()]
    columns = ["file", "sku", "name", "category", "color", "tags", *parsed.attribute_names()]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["file"]))
    # Rewritten only when it changes: its modification time is in the drop's fingerprint, and a refresh that
    # touched it would make the sensor run the drop again after every run.
    _write_if_changed(folder / "products.csv", out.getvalue())
    report.pictures = len(state)
    return report
