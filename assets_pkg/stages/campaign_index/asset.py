"""campaign_image_index: the drop's campaign images in their own Milvus collection, searchable like products."""

from dagster import AssetExecutionContext, AutomationCondition

from ...domain.milvus import campaign_collection, campaign_uri
from ...resources import ClipModel, DropLibrary, MilvusResource, search_models
from ...stage import Outcome, drop_stage
from ..campaigns.asset import campaign_images
from .logic import index_campaign_images


@drop_stage(
    deps=[campaign_images],
    group_name="campaigns",
    kinds={"milvus", "pytorch"},
    # Follows campaign_images whenever a run made them without it (a click on campaign_images alone).
    automation_condition=AutomationCondition.eager(),
    description="The drop's campaign images in their own Milvus collection (`<collection>_campaigns`), so text "
                "search finds generated images too; only new images are encoded.",
)
def campaign_image_index(context: AssetExecutionContext, drop: str, library: DropLibrary, clip: ClipModel,
                         milvus: MilvusResource) -> Outcome:
    models = search_models(library, milvus)
    model = clip.use_in(models)
    art = library.artifacts(drop)
    collection = campaign_collection(model.collection)
    report = index_campaign_images(drop, art, model.id, clip.encoder,
                                   lambda: milvus.campaign_store(collection=model.collection),
                                   campaign_uri(milvus.get("uri")), collection, model_files=model.files(art),
                                   transition=models.transition)
    if not report.synced:
        context.log.info(f"{drop}: campaign images unchanged since a verified sync; Milvus not opened")
    return Outcome(report.key, {
        "images": report.images, "encoded": report.encoded, "upserted": report.upserted,
        "deleted": report.deleted, "indexed": report.indexed, "synced": report.synced,
        "dagster/row_count": report.indexed, "collection": collection,
    })


ASSETS = [campaign_image_index]
