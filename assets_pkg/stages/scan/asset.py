"""raw_product_images: the drop folder's manifest."""

from collections import Counter

from dagster import AssetExecutionContext, MetadataValue

from ...metadata import SHEET_LIMIT, contact_sheet_metadata, table
from ...domain.sheets import contact_sheet
from ...resources import DropLibrary
from ...stage import Outcome, drop_stage
from .logic import update_manifest

REJECTED = {"file": "string", "reason": "string"}


@drop_stage(
    group_name="catalog",
    kinds={"python", "parquet"},
    description="Manifest of a drop folder: one row per valid image (path, sha256, size, format); rejected files with reasons.",
)
def raw_product_images(context: AssetExecutionContext, drop: str, library: DropLibrary) -> Outcome:
    folder = library.drop(drop)
    art = library.artifacts(drop)
    scan = update_manifest(folder, art, library.get("max_image_pixels"))
    images, rejected = scan.manifest.images, scan.manifest.rejected
    for r in rejected:
        context.log.warning(f"rejected {drop}/{r['file']}: {r['reason']}")
    more = f" (first {SHEET_LIMIT})" if len(images) > SHEET_LIMIT else ""
    sheet = contact_sheet_metadata(
        art.sheet_path("drop"), "drop", reuse=not scan.changed,
        draw=lambda: contact_sheet([(folder.folder / p, p) for p in images["path"].head(SHEET_LIMIT)],
                                   title=f"{drop}: {len(images)} images{more}"),
    )
    return Outcome(scan.key, {
        "images": len(images) + len(rejected),
        "valid": len(images),
        "rejected": len(rejected),
        "distinct_contents": int(images["sha256"].nunique()),
        "bytes": int(images["bytes"].sum()),
        "formats": MetadataValue.json(dict(Counter(images["format"]))),
        "rejected_files": table(rejected, REJECTED),
        "scan_seconds": round(scan.seconds, 3),
        "dagster/row_count": len(images),
        "folder": MetadataValue.path(str(folder.folder)),
        "changed": scan.changed,
        **sheet,
    })


ASSETS = [raw_product_images]
