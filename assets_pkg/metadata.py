"""How assets show their reports in the UI: tables and contact sheets."""

from __future__ import annotations

from typing import Callable

from dagster import MetadataValue, TableColumn, TableRecord, TableSchema
from PIL import Image

from .domain import storage
from .domain.sheets import markdown_image, to_jpeg

SHEET_LIMIT = 48  # thumbnails per contact sheet shown in the UI


def table(rows: list[dict], columns: dict[str, str]) -> MetadataValue:
    """A sortable table in the UI; `columns`: name -> type (string, int, float, bool)."""
    schema = TableSchema(columns=[TableColumn(name, kind) for name, kind in columns.items()])
    records = [TableRecord({c: "" if r.get(c) is None else r[c] for c in columns}) for r in rows]
    return MetadataValue.table(records, schema)


def contact_sheet_metadata(path: storage.AnyPath, name: str, draw: Callable[[], Image.Image], reuse: bool) -> dict:
    """The contact sheet at `path`: the one an earlier run wrote when `reuse` (its inputs are unchanged),
    else freshly drawn and written."""
    inline = None
    if reuse:
        try:
            with Image.open(storage.image_source(path)) as sheet:
                inline = markdown_image(sheet, name)
        except FileNotFoundError:
            pass
    if inline is None:
        sheet = draw()
        storage.write_atomic(path, to_jpeg(sheet, max_side=2400, quality=85))
        inline = markdown_image(sheet, name)
    return {"contact_sheet": MetadataValue.md(inline), "contact_sheet_file": MetadataValue.path(str(path))}
