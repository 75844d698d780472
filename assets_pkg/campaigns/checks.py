"""Checks of the campaigns group. `every_brief_has_references` is evaluated inside reference_images' step;
`campaign_images_decode` is a check of its own, so it can also be run alone against the files on disk."""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    MetadataValue,
    asset_check,
)

from ..domain.campaigns import png_decodes
from ..domain.references import ReferencesReport
from ..partitions import product_drops
from ..resources import DropLibrary

EVERY_BRIEF_HAS_REFERENCES = AssetCheckSpec(
    "every_brief_has_references", asset="reference_images", partitions_def=product_drops,
    description="Every brief found at least one reference image. Not blocking: a brief without references "
                "can still be generated from its prompt alone, and the others must go on.",
)


def every_brief_has_references(report: ReferencesReport) -> AssetCheckResult:
    empty = report.briefs_without_references
    return AssetCheckResult(check_name=EVERY_BRIEF_HAS_REFERENCES.name, passed=not empty,
                            severity=AssetCheckSeverity.WARN,
                            metadata={"briefs_without_references": MetadataValue.json(empty)})


@asset_check(asset="campaign_images", partitions_def=product_drops,
             description="Every generated campaign PNG decodes and is not empty.")
def campaign_images_decode(context: AssetCheckExecutionContext, library: DropLibrary) -> AssetCheckResult:
    pngs = library.artifacts(context.partition_key).campaign_pngs()
    bad = [f"{png.name}: {problem}" for png in pngs if (problem := png_decodes(png))]
    return AssetCheckResult(passed=not bad, metadata={"images": len(pngs), "broken": MetadataValue.json(bad)})
