"""campaign_briefs: the drop's briefs.yaml, validated against the image model and the catalog."""

from dagster import AssetExecutionContext, MetadataValue

from ...domain import storage
from ...metadata import table
from ...resources import DropLibrary, ImageGeneratorResource
from ...stage import Outcome, drop_stage
from ..catalog.asset import product_catalog
from ..catalog.logic import read_catalog_of
from .logic import check_base_images, check_channels, check_products, load_briefs, write_briefs

BRIEF_COLUMNS = {"id": "string", "query": "string", "products": "string", "where": "string", "top_k": "int",
                 "aspect_ratio": "string", "image_size": "string", "variants": "int", "base_image": "string",
                 "channels": "string", "prompt": "string"}


def _brief_row(b) -> dict:
    return {**b.to_dict(), "base_image": b.base_image or "", "products": ", ".join(b.products),
            "channels": ", ".join(b.channels),
            "where": ", ".join(f"{k}={v}" for k, v in b.where.items())}


@drop_stage(
    deps=[product_catalog],
    group_name="campaigns",
    kinds={"yaml"},
    description="Validated campaign briefs from `<drop>/briefs.yaml` (id, prompt, query, products, where, top_k, "
                "aspect_ratio, base_image, channels); every SKU a brief names is in the drop's catalog, every channel in "
                "the channel table (with `channels.yaml`).",
)
def campaign_briefs(context: AssetExecutionContext, drop: str, library: DropLibrary,
                    generator: ImageGeneratorResource) -> Outcome:
    folder = library.drop(drop)
    # Sizes and aspect ratios are checked against the configured model, so a brief it cannot serve
    # fails here, naming the file and the brief, before anything is searched or billed.
    briefs = load_briefs(folder.briefs_file, model=generator.model_info(), default_size=generator.get("image_size"))
    art = library.artifacts(drop)
    check_products(briefs, read_catalog_of(art), folder.briefs_file)  # an unknown SKU fails before any search
    check_base_images(briefs, folder.folder, library.get("base_images_dir"), library.get("max_image_pixels"),
                      folder.briefs_file)
    if any(b.channels for b in briefs):  # an unknown channel (or a bad channels.yaml) fails before any search
        check_channels(briefs, library.channels(drop), folder.briefs_file)
    key = write_briefs(art, briefs)
    if not storage.exists(folder.briefs_file):
        context.log.info(f"{folder.briefs_file} not found: no campaign briefs for {drop}")
    return Outcome(key, {
        "briefs": len(briefs),
        "file": MetadataValue.path(str(folder.briefs_file)),
        "table": table([_brief_row(b) for b in briefs], BRIEF_COLUMNS),
    })


ASSETS = [campaign_briefs]
