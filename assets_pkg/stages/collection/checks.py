"""The collection's blocking check, evaluated inside the asset's own step (`check_specs`): a check step of its
own would cost another opening of the collection (about 0.5 s for a Milvus Lite file)."""

from dagster import AssetCheckResult, AssetCheckSpec, MetadataValue

from ...partitions import product_drops
from ..embeddings.checks import sample
from .logic import CollectionReport


COLLECTION_MATCHES_MANIFEST = AssetCheckSpec(
    "collection_matches_manifest", asset="product_image_collection", blocking=True, partitions_def=product_drops,
    description="The drop's rows in Milvus are exactly its embedded images: same ids, no orphan, none missing.",
)


def collection_matches_manifest(report: CollectionReport) -> AssetCheckResult:
    if report.ids is None:
        metadata = {"verified_by": "the same rows passed this check and the Milvus Lite file is unchanged since"}
    else:
        metadata = {"missing": MetadataValue.json(sample(report.expected - report.ids)),
                    "orphans": MetadataValue.json(sample(report.ids - report.expected))}
    return AssetCheckResult(
        check_name=COLLECTION_MATCHES_MANIFEST.name, passed=report.matches,
        metadata={"rows_in_milvus": report.indexed, "valid_images": len(report.expected), **metadata},
    )
