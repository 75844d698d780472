"""product_image_collection: the drop's rows in Milvus, with their product fields."""

from dagster import AssetExecutionContext, Config

from ...domain.record import inputs_key
from ...resources import ClipModel, DropLibrary, MilvusResource, search_models
from ...stage import Outcome, drop_stage
from ..catalog.asset import product_catalog
from ..embeddings.asset import clip_embeddings
from .checks import COLLECTION_MATCHES_MANIFEST, collection_matches_manifest
from .logic import keep_serving_in_line, sync_collection


class CollectionConfig(Config):
    verify: bool = False  # ask Milvus for the drop's rows, even when the Lite file is the one verified last time


@drop_stage(
    deps=[clip_embeddings, product_catalog],
    group_name="catalog",
    kinds={"milvus"},
    check_specs=[COLLECTION_MATCHES_MANIFEST],
    description="The drop's rows in the Milvus collection of the model it encodes with: exactly its embedded "
                "images, keyed by drop and content hash, with their product fields and a BM25 full-text field "
                "(and, while a change of model is built, the serving model's rows kept in line).",
)
def product_image_collection(context: AssetExecutionContext, drop: str, config: CollectionConfig,
                             library: DropLibrary, clip: ClipModel, milvus: MilvusResource) -> Outcome:
    art = library.artifacts(drop)
    models = search_models(library, milvus)
    model = clip.use_in(models)
    report = sync_collection(drop, art, lambda: milvus.store(collection=model.collection), milvus.get("uri"),
                             model.collection, milvus.display_uri, files=model.files(art),
                             transition=models.transition, verify=config.verify)
    context.log.info(f"{drop}: upserted {report.upserted}, deleted {report.deleted}, {report.indexed} rows now "
                     f"in {model.collection}")
    key, serving = report.key, models.serving
    if serving.id != model.id:
        kept = keep_serving_in_line(drop, art, serving, lambda: milvus.store(collection=serving.collection),
                                    milvus.get("uri"), milvus.display_uri)
        key = inputs_key(rows=report.key, serving_rows=kept)
        context.log.info(f"{drop}: search answers from {serving.id} ({serving.collection}) until every drop is "
                         f"built for {model.id}")
    return Outcome(key, checks=[collection_matches_manifest(report)], metadata={
        "model": model.id,
        "collection": model.collection,
        "serving_model": serving.id,
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
