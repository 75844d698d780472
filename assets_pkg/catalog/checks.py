"""Blocking checks of the catalog, evaluated inside their asset's own step (`check_specs`), on what the step
just wrote: a check step of its own would cost a launched run another step's events, and the Milvus one
another opening of the collection (about 0.5 s for a Milvus Lite file)."""

import numpy as np
from dagster import AssetCheckResult, AssetCheckSpec, MetadataValue

from ..domain.artifacts import DropArtifacts
from ..domain.collection import CollectionReport
from ..partitions import product_drops


def _sample(items, n: int = 10) -> list:
    return sorted(items)[:n]


EMBEDDINGS_ARE_SOUND = AssetCheckSpec(
    "embeddings_are_sound", asset="clip_embeddings", blocking=True, partitions_def=product_drops,
    description="Dimension as recorded, unit norm, no NaN, exactly one vector per distinct valid image "
                "(less the files the encoder could not read).",
)


def embeddings_are_sound(art: DropArtifacts) -> AssetCheckResult:
    """Read back what the embedding step wrote and hold it to the manifest."""
    sha, vecs, model_id = art.read_embeddings()
    info = art.embeddings_info()
    unreadable = {r["sha256"] for r in info.get("rejected", [])}
    expected = set(art.read_manifest().images["sha256"]) - unreadable
    norms = np.linalg.norm(vecs, axis=1) if len(vecs) else np.zeros(0)
    nan_rows = int(np.isnan(vecs).any(axis=1).sum()) if len(vecs) else 0
    bad_norm = int((np.abs(norms - 1) > 1e-3).sum())
    missing, extra = expected - set(sha), set(sha) - expected
    duplicates = len(sha) - len(set(sha))
    passed = vecs.shape[1] == info.get("dim") and not nan_rows and not bad_norm and not missing and not extra \
        and not duplicates
    return AssetCheckResult(
        check_name=EMBEDDINGS_ARE_SOUND.name,
        passed=passed,
        metadata={
            "dim": int(vecs.shape[1]), "expected_dim": info.get("dim"), "model": model_id or "",
            "rows": len(sha), "valid_images": len(expected), "nan_rows": nan_rows, "not_unit_norm": bad_norm,
            "duplicates": duplicates, "missing": MetadataValue.json(_sample(missing)),
            "extra": MetadataValue.json(_sample(extra)),
        },
    )


COLLECTION_MATCHES_MANIFEST = AssetCheckSpec(
    "collection_matches_manifest", asset="product_image_collection", blocking=True, partitions_def=product_drops,
    description="The drop's rows in Milvus are exactly its embedded images: same ids, no orphan, none missing.",
)


def collection_matches_manifest(report: CollectionReport) -> AssetCheckResult:
    if report.ids is None:
        metadata = {"verified_by": "the same rows passed this check and the Milvus Lite file is unchanged since"}
    else:
        metadata = {"missing": MetadataValue.json(_sample(report.expected - report.ids)),
                    "orphans": MetadataValue.json(_sample(report.ids - report.expected))}
    return AssetCheckResult(
        check_name=COLLECTION_MATCHES_MANIFEST.name, passed=report.matches,
        metadata={"rows_in_milvus": report.indexed, "valid_images": len(report.expected), **metadata},
    )
