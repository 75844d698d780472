"""product_image_collection: the drop's rows in Milvus, with their product fields."""

from dagster import AssetExecutionContext

from ...resources import DropLibrary, MilvusResource
from ...stage import Outcome, drop_stage
from ..catalog.asset import product_catalog
from ..embeddings.asset import clip_embeddings
from .checks import COLLECTION_MATCHES_MANIFEST, collection_matches_manifest
from .logic import sync_collection


@drop_stage(
    deps=[clip_embeddings, product_catalog],
    group_name="catalog",
    kinds={"milvus"},
    check_specs=[COLLECTION_MATCHES_MANIFEST],
    description="The drop's rows in the Milvus collection: exactly its embedded images, keyed by drop and content "
                "hash, with their product fields and a BM25 full-text field.",
)
def product_image_collection(context: AssetExecutionContext, drop: str, library: DropLibrary,
                             milvus: MilvusResource) -> Outcome:
    collection = milvus.get("collection")
    report = sync_collection(drop, library.artifacts(drop), milvus.store, milvus.get("uri"), collection,
                             milvus.display_uri)
    context.log.info(f"{drop}: upserted {report.upserted}, deleted {report.deleted}, {report.indexed} rows now "
                     f"in {collection}")
    return Outcome(report.key, checks=[collection_matches_manifest(report)], metadata={
        "collection": collection,
        "milvus": milvus.display_uri,
        "indexed": report.indexed,
        "upserted": report.upserted,
        "deleted": report.deleted,
        "unchanged": report.unchanged,
        "with_product": report.products,
        "collection_rows": report.collection_rows,
        "dagster/row_count": report.indexed,
    })


ASSETS = [product_image_collection]
