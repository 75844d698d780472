"""search_model: which model's collection search answers from, and the switch to a new model once every drop
is built for it (domain/search_models.py). One materialization per switch (the model_changes sensor asks
for it when the new model is built; a click asks at any time): its metadata is the state of every drop."""

from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue, asset

from ...metadata import table
from ...partitions import product_drops
from ...resources import DropLibrary, MilvusResource, search_models
from ..campaign_index.asset import campaign_image_index
from ..collection.asset import product_image_collection

PROGRESS_COLUMNS = {"drop": "string", "serving_images": "int", "target_images": "int", "built": "bool"}


@asset(
    deps=[product_image_collection, campaign_image_index],
    group_name="search",
    kinds={"milvus"},
    description="The model whose collection search, references and the page answer from. After CLIP_MODEL "
                "changes, it moves to the new model in one step once every drop is built for it.",
)
def search_model(context: AssetExecutionContext, library: DropLibrary, milvus: MilvusResource) -> MaterializeResult:
    models = search_models(library, milvus)
    target = models.target
    switched, progress = models.switch_if_ready(list(context.instance.get_dynamic_partitions(product_drops.name)))
    serving = models.serving
    if switched:
        context.log.info(f"search now answers from {serving.id} ({serving.collection})")
    elif target is not None:
        waiting = models.waiting(progress)
        context.log.info(f"search stays on {serving.id}: {len(waiting)} drop(s) not yet built for {target.id}: "
                         + ", ".join(waiting[:20]))
    rows = [{"drop": d, **p} for d, p in sorted(progress.items())]
    return MaterializeResult(
        data_version=DataVersion(f"{serving.id}@{serving.collection}") if serving else None,
        metadata={
            "serving_model": serving.id if serving else "",
            "collection": serving.collection if serving else "",
            "switched": switched,
            "building": models.target.id if models.target else "",
            "drops_built": sum(1 for p in progress.values() if p["built"]),
            "drops": len(progress),
            "history": MetadataValue.json(models.state["history"]),
            "progress": table(rows, PROGRESS_COLUMNS),
        },
    )


ASSETS = [search_model]
