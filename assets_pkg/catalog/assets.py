"""raw_product_images -> clip_embeddings -> product_image_collection, one partition per drop, with
product_catalog (the drop's products.csv) feeding the collection its product fields.

Each body reads its inputs, calls its stage in `domain/` (scan, catalog, embeddings, collection) and turns
the stage's report into metadata.
"""

import sys
from collections import Counter

from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue, asset
from tqdm import tqdm

from ..domain.artifacts import digest
from ..domain.catalog import CATALOG_FILE, update_catalog
from ..domain.collection import sync_collection
from ..domain.embeddings import embed_drop
from ..domain.scan import update_manifest
from ..domain.sheets import contact_sheet
from ..k8s import GPU_POD
from ..metadata import SHEET_LIMIT, contact_sheet_metadata, fail_clearly, table
from ..partitions import product_drops
from ..resources import ClipModel, DropLibrary, MilvusResource
from .checks import (
    COLLECTION_MATCHES_MANIFEST,
    EMBEDDINGS_ARE_SOUND,
    collection_matches_manifest,
    embeddings_are_sound,
)

REJECTED = {"file": "string", "reason": "string"}
CATALOG_REJECTED = {"line": "int", "file": "string", "reason": "string"}
PRODUCT_COLUMNS = {"file": "string", "sku": "string", "name": "string", "category": "string", "color": "string",
                   "tags": "string"}


@asset(
    partitions_def=product_drops,
    group_name="catalog",
    kinds={"python", "parquet"},
    description="Manifest of a drop folder: one row per valid image (path, sha256, size, format); rejected files with reasons.",
)
@fail_clearly
def raw_product_images(context: AssetExecutionContext, library: DropLibrary) -> MaterializeResult:
    drop = library.drop(context.partition_key)
    art = library.artifacts(drop.name)
    scan = update_manifest(drop, art, library.get("max_image_pixels"))
    images, rejected = scan.manifest.images, scan.manifest.rejected
    for r in rejected:
        context.log.warning(f"rejected {drop.name}/{r['file']}: {r['reason']}")
    more = f" (first {SHEET_LIMIT})" if len(images) > SHEET_LIMIT else ""
    sheet = contact_sheet_metadata(
        art.sheet_path("drop"), "drop", reuse=not scan.changed,
        draw=lambda: contact_sheet([(drop.folder / p, p) for p in images["path"].head(SHEET_LIMIT)],
                                   title=f"{drop.name}: {len(images)} images{more}"),
    )
    return MaterializeResult(
        metadata={
            "images": len(images) + len(rejected),
            "valid": len(images),
            "rejected": len(rejected),
            "distinct_contents": int(images["sha256"].nunique()),
            "bytes": int(images["bytes"].sum()),
            "formats": MetadataValue.json(dict(Counter(images["format"]))),
            "rejected_files": table(rejected, REJECTED),
            "scan_seconds": round(scan.seconds, 3),
            "dagster/row_count": len(images),
            "folder": MetadataValue.path(str(drop.folder)),
            "changed": scan.changed,
            **sheet,
        }
    )


@asset(
    partitions_def=product_drops,
    deps=[raw_product_images],
    group_name="catalog",
    kinds={"csv"},
    description=f"The drop's {CATALOG_FILE}, validated row by row: which product (SKU, name, category, colour, "
                f"tags, other columns as attributes) each image shows; bad rows rejected with their line.",
)
@fail_clearly
def product_catalog(context: AssetExecutionContext, library: DropLibrary) -> MaterializeResult:
    drop = library.drop(context.partition_key)
    report = update_catalog(drop.folder, library.artifacts(drop.name))
    catalog = report.catalog
    for r in catalog.rejected:
        context.log.warning(f"{drop.name}/{CATALOG_FILE}:{r['line']}: {r['reason']}")
    if not catalog.present:
        context.log.info(f"{drop.name} has no {CATALOG_FILE}: its products are known by their file names")
    rows = [{**p.fields(), "file": f, "tags": "; ".join(p.tags)} for f, p in catalog.products.items()]
    return MaterializeResult(
        # the collection follows a changed catalog, not every refresh
        data_version=DataVersion(digest(catalog.to_json())),
        metadata={
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
        },
    )


@asset(
    partitions_def=product_drops,
    deps=[raw_product_images],
    group_name="catalog",
    kinds={"pytorch", "parquet"},
    pool="gpu",
    check_specs=[EMBEDDINGS_ARE_SOUND],
    op_tags={"dagster-k8s/config": GPU_POD},
    description="CLIP image embeddings (float32, unit norm) of each distinct image; reused by content hash.",
)
@fail_clearly
def clip_embeddings(context: AssetExecutionContext, library: DropLibrary, clip: ClipModel) -> MaterializeResult:
    drop = library.drop(context.partition_key)
    art = library.artifacts(drop.name)
    bar = None  # a terminal progress bar, only once something is being encoded

    def progress(p):
        nonlocal bar
        context.log.info(f"embedded {p.done}/{p.total} images, {p.images_per_second:.1f} images/s")
        if clip.progress_bar:
            bar = bar or tqdm(total=p.total, desc=f"{drop.name} embeddings", unit="img", file=sys.stderr)
            bar.update(p.done - bar.n)

    try:
        # model_id() names the weights without loading them: an unchanged drop never imports torch.
        report = embed_drop(drop, art, clip.model_id(), clip.encoder, on_progress=progress, log=context.log.info)
    finally:
        if bar is not None:
            bar.close()
    for r in report.rejected:
        context.log.warning(f"rejected {drop.name}/{r['file']}: {r['reason']}")
    return MaterializeResult(
        check_results=[embeddings_are_sound(art)],
        metadata={
            "model": report.model_id,
            "device": report.device,
            "dim": report.dim,
            "vectors": report.vectors,
            "encoded": report.encoded,
            "reused": report.reused,
            "rejected": len(report.rejected),
            "rejected_files": table(report.rejected, REJECTED),
            "encode_seconds": round(report.seconds, 3),
            "images_per_second": report.images_per_second,
            "batch_size": report.batch_size,
            "fit": clip.get("fit"),
            "dagster/row_count": report.vectors,
        }
    )


@asset(
    partitions_def=product_drops,
    deps=[clip_embeddings, product_catalog],
    group_name="catalog",
    kinds={"milvus"},
    check_specs=[COLLECTION_MATCHES_MANIFEST],
    description="The drop's rows in the Milvus collection: exactly its embedded images, keyed by drop and content "
                "hash, with their product fields and a BM25 full-text field.",
)
@fail_clearly
def product_image_collection(
    context: AssetExecutionContext, library: DropLibrary, milvus: MilvusResource
) -> MaterializeResult:
    drop = context.partition_key
    collection = milvus.get("collection")
    report = sync_collection(drop, library.artifacts(drop), milvus.store, milvus.get("uri"), collection,
                             milvus.display_uri)
    context.log.info(f"{drop}: upserted {report.upserted}, deleted {report.deleted}, {report.indexed} rows now "
                     f"in {collection}")
    return MaterializeResult(
        # reference_images follows a changed data version, not every (often no-op) refresh
        data_version=DataVersion(report.rows_digest),
        check_results=[collection_matches_manifest(report)],
        metadata={
            "collection": collection,
            "milvus": milvus.display_uri,
            "indexed": report.indexed,
            "upserted": report.upserted,
            "deleted": report.deleted,
            "unchanged": report.unchanged,
            "with_product": report.products,
            "collection_rows": report.collection_rows,
            "dagster/row_count": report.indexed,
        }
    )


catalog_assets = [raw_product_images, product_catalog, clip_embeddings, product_image_collection]
