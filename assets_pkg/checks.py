"""Asset checks beside the assets they check; the blocking ones stop a bad step from feeding the next.

Three are evaluated inside their asset's own step (`check_specs`), on what the step just wrote: a check
step of its own would cost a launched run another step's events, and the Milvus one another opening of
the collection (about 0.5 s for a Milvus Lite file). `campaign_images_decode` is a check of its own, so it
can also be run alone against the files on disk.
"""

import numpy as np
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    MetadataValue,
    asset_check,
)

from .domain.artifacts import DropArtifacts
from .domain.briefs import Brief
from .domain.campaigns import png_decodes
from .domain.store import row_id
from .partitions import product_drops
from .resources import DropLibrary


def _sample(items, n: int = 10) -> list:
    return sorted(items)[:n]


EMBEDDINGS_ARE_SOUND = AssetCheckSpec(
    "embeddings_are_sound", asset="clip_embeddings", blocking=True, partitions_def=product_drops,
    description="Dimension as recorded, unit norm, no NaN, exactly one vector per distinct valid image.",
)


def embeddings_are_sound(art: DropArtifacts) -> AssetCheckResult:
    """Read back what the embedding step wrote and hold it to the manifest."""
    sha, vecs, model_id = art.read_embeddings()
    expected = set(art.read_manifest().images["sha256"])
    recorded_dim = art.embeddings_info().get("dim")
    norms = np.linalg.norm(vecs, axis=1) if len(vecs) else np.zeros(0)
    nan_rows = int(np.isnan(vecs).any(axis=1).sum()) if len(vecs) else 0
    bad_norm = int((np.abs(norms - 1) > 1e-3).sum())
    missing, extra = expected - set(sha), set(sha) - expected
    duplicates = len(sha) - len(set(sha))
    passed = vecs.shape[1] == recorded_dim and not nan_rows and not bad_norm and not missing and not extra \
        and not duplicates
    return AssetCheckResult(
        check_name=EMBEDDINGS_ARE_SOUND.name,
        passed=passed,
        metadata={
            "dim": int(vecs.shape[1]), "expected_dim": recorded_dim, "model": model_id or "",
            "rows": len(sha), "valid_images": len(expected), "nan_rows": nan_rows, "not_unit_norm": bad_norm,
            "duplicates": duplicates, "missing": MetadataValue.json(_sample(missing)),
            "extra": MetadataValue.json(_sample(extra)),
        },
    )


COLLECTION_MATCHES_MANIFEST = AssetCheckSpec(
    "collection_matches_manifest", asset="product_image_collection", blocking=True, partitions_def=product_drops,
    description="The drop's rows in Milvus are exactly its valid images: same ids, no orphan, none missing.",
)


def collection_matches_manifest(drop: str, content_hashes, ids_in_milvus: set[str]) -> AssetCheckResult:
    expected = {row_id(drop, h) for h in content_hashes}
    missing, orphans = expected - ids_in_milvus, ids_in_milvus - expected
    return AssetCheckResult(
        check_name=COLLECTION_MATCHES_MANIFEST.name,
        passed=not missing and not orphans,
        metadata={
            "rows_in_milvus": len(ids_in_milvus), "valid_images": len(expected),
            "missing": MetadataValue.json(_sample(missing)), "orphans": MetadataValue.json(_sample(orphans)),
        },
    )


def collection_unchanged_since_verified(valid_images: int, rows: int) -> AssetCheckResult:
    """The same rows were synced and this check passed on them, and the Milvus Lite file has not been
    written since (same size and modification time)."""
    return AssetCheckResult(
        check_name=COLLECTION_MATCHES_MANIFEST.name,
        passed=rows == valid_images,
        metadata={"rows_in_milvus": rows, "valid_images": valid_images,
                  "verified_by": "the same rows passed this check and the Milvus Lite file is unchanged since"},
    )


EVERY_BRIEF_HAS_REFERENCES = AssetCheckSpec(
    "every_brief_has_references", asset="reference_images", partitions_def=product_drops,
    description="Every brief found at least one reference image. Not blocking: a brief without references "
                "can still be generated from its prompt alone, and the others must go on.",
)


def every_brief_has_references(briefs: list[Brief], refs: dict[str, list[dict]]) -> AssetCheckResult:
    empty = [b.id for b in briefs if not refs.get(b.id)]
    return AssetCheckResult(check_name=EVERY_BRIEF_HAS_REFERENCES.name, passed=not empty,
                            severity=AssetCheckSeverity.WARN,
                            metadata={"briefs_without_references": MetadataValue.json(empty)})


@asset_check(asset="campaign_images", partitions_def=product_drops,
             description="Every generated campaign PNG decodes and is not empty.")
def campaign_images_decode(context: AssetCheckExecutionContext, library: DropLibrary) -> AssetCheckResult:
    pngs = sorted(library.artifacts(context.partition_key).campaign_dir.glob("*.png"))
    bad = [f"{png.name}: {problem}" for png in pngs if (problem := png_decodes(png))]
    return AssetCheckResult(passed=not bad, metadata={"images": len(pngs), "broken": MetadataValue.json(bad)})


drop_checks = [campaign_images_decode]
