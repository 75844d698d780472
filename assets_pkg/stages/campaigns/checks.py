"""`campaign_images_decode` is a check of its own (not inside the asset's step), so it can also be run alone
against the files on disk."""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    MetadataValue,
    asset_check,
)

from ...partitions import product_drops
from ...resources import DropLibrary
from .logic import campaign_pngs, png_decodes

@asset_check(asset="campaign_images", partitions_def=product_drops,
             description="Every generated campaign PNG decodes and is not empty.")
def campaign_images_decode(context: AssetCheckExecutionContext, library: DropLibrary) -> AssetCheckResult:
    pngs = campaign_pngs(library.artifacts(context.partition_key))
    bad = [f"{png.name}: {problem}" for png in pngs if (problem := png_decodes(png))]
    return AssetCheckResult(passed=not bad, metadata={"images": len(pngs), "broken": MetadataValue.json(bad)})
