"""Asset checks beside the assets they check; the blocking ones stop a bad step from feeding the next."""

import json

import numpy as np
from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check
from PIL import Image

from .assets import _sample, campaign_images, clip_embeddings, product_drops, reference_images
from .resources import DropLibrary


@asset_check(asset=clip_embeddings, partitions_def=product_drops, blocking=True,
             description="Dimension as recorded, unit norm, no NaN, exactly one vector per distinct valid image.")
def embeddings_are_sound(context: AssetCheckExecutionContext, library: DropLibrary) -> AssetCheckResult:
    art = library.artifacts(context.partition_key)
    sha, vecs, model_id = art.read_embeddings()
    expected = set(art.read_manifest().images["sha256"])
    info = json.loads((art.root / "embeddings.json").read_text())
    norms = np.linalg.norm(vecs, axis=1) if len(vecs) else np.zeros(0)
    nan_rows = int(np.isnan(vecs).any(axis=1).sum()) if len(vecs) else 0
    bad_norm = int((np.abs(norms - 1) > 1e-3).sum())
    missing, extra = expected - set(sha), set(sha) - expected
    duplicates = len(sha) - len(set(sha))
    passed = vecs.shape[1] == info["dim"] and not nan_rows and not bad_norm and not missing and not extra \
        and not duplicates
    return AssetCheckResult(
        passed=passed,
        metadata={
            "dim": int(vecs.shape[1]), "expected_dim": info["dim"], "model": model_id or "",
            "rows": len(sha), "valid_images": len(expected), "nan_rows": nan_rows, "not_unit_norm": bad_norm,
            "duplicates": duplicates, "missing": MetadataValue.json(_sample(missing)),
            "extra": MetadataValue.json(_sample(extra)),
        },
    )


@asset_check(asset=reference_images, partitions_def=product_drops,
             description="Every brief found at least one reference image. Not blocking: a brief without "
                         "references can still be generated from its prompt alone, and the others must go on.")
def every_brief_has_references(context: AssetCheckExecutionContext, library: DropLibrary) -> AssetCheckResult:
    art = library.artifacts(context.partition_key)
    refs = art.read_references()
    empty = [b.id for b in art.read_briefs() if not refs.get(b.id)]
    return AssetCheckResult(passed=not empty, severity=AssetCheckSeverity.WARN,
                            metadata={"briefs_without_references": MetadataValue.json(empty)})


@asset_check(asset=campaign_images, partitions_def=product_drops,
             description="Every generated campaign PNG decodes and is not empty.")
def campaign_images_decode(context: AssetCheckExecutionContext, library: DropLibrary) -> AssetCheckResult:
    bad = []
    pngs = sorted(library.artifacts(context.partition_key).campaign_dir.glob("*.png"))
    for png in pngs:
        try:
            with Image.open(png) as im:
                im.load()
                if im.width == 0 or im.height == 0:
                    bad.append(f"{png.name}: empty image")
        except Exception as e:
            bad.append(f"{png.name}: {e}")
    return AssetCheckResult(passed=not bad, metadata={"images": len(pngs), "broken": MetadataValue.json(bad)})


# collection_matches_manifest runs inside product_image_collection's step (assets.py), on its Milvus connection.
drop_checks = [embeddings_are_sound, every_brief_has_references, campaign_images_decode]
