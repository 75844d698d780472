"""product_catalog: the drop's products.csv, validated row by row."""

from collections import Counter

from dagster import AssetExecutionContext, MetadataValue

from ...domain.drops import CATALOG_FILE
from ...metadata import table
from ...resources import DropLibrary
from ...stage import Outcome, drop_stage
from ..scan.asset import raw_product_images
from .logic import update_catalog

CATALOG_REJECTED = {"line": "int", "file": "string", "reason": "string"}
PRODUCT_COLUMNS = {"file": "string", "sku": "string", "name": "string", "category": "string", "color": "string",
                   "tags": "string"}


@drop_stage(
    deps=[raw_product_images],
    group_name="catalog",
    kinds={"csv"},
    description=f"The drop's {CATALOG_FILE}, validated row by row: which product (SKU, name, category, colour, "
                f"tags, other columns as attributes) each image shows; bad rows rejected with their line.",
)
def product_catalog(context: AssetExecutionContext, drop: str, library: DropLibrary) -> Outcome:
    report = update_catalog(library.drop(drop).folder, library.artifacts(drop))
    catalog = report.catalog
    for r in catalog.rejected:
        context.log.warning(f"{drop}/{CATALOG_FILE}:{r['line']}: {r['reason']}")
    if not catalog.present:
        context.log.info(f"{drop} has no {CATALOG_FILE}: its products are known by their file names")
    rows = [{**p.fields(), "file": f, "tags": "; ".join(p.tags)} for f, p in catalog.products.items()]
    return Outcome(report.key, {
        "catalog": catalog.present,
        "products": len(catalog.skus),
        "rows": len(catalog.products),
        "rejected": len(catalog.rejected),
        "rejected_rows": table(catalog.rejected, CATALOG_REJECTED),
        "images_without_product": report.unlisted,
        "categories": MetadataValue.json(dict(Counter(p.category for p in catalog.products.values() if p.category))),
        "table": table(rows[:1000], PRODUCT_COLUMNS),
        "changed": report.changed,
        "dagster/row_count": len(catalog.products),
    })


ASSETS = [product_catalog]
