"""`every_brief_has_references`, evaluated inside reference_images' step on what it just found."""

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from ...partitions import product_drops
from .logic import ReferencesReport

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
