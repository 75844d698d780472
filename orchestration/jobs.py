"""Jobs over the drop graph; each run covers one drop (partition) and is tagged with it."""

from dagster import AssetSelection, define_asset_job

from assets_pkg.assets import (
    campaign_briefs,
    campaign_images,
    clip_embeddings,
    drop_assets,
    product_drops,
    product_image_collection,
    raw_product_images,
    reference_images,
)

drop_graph_job = define_asset_job(
    "drop_graph",
    selection=AssetSelection.assets(*drop_assets),
    partitions_def=product_drops,
    description="Every step for one product drop: images, embeddings, Milvus, briefs, references, campaign images.",
)

refresh_catalog_job = define_asset_job(
    "refresh_catalog",
    selection=AssetSelection.assets(raw_product_images, clip_embeddings, product_image_collection),
    partitions_def=product_drops,
    description="Re-scan a drop and bring its embeddings and Milvus rows in line with the folder (no-op if unchanged).",
)

regenerate_campaigns_job = define_asset_job(
    "regenerate_campaigns",
    selection=AssetSelection.assets(campaign_briefs, reference_images, campaign_images),
    partitions_def=product_drops,
    description="Re-read briefs, re-retrieve references and generate campaign images whose inputs changed.",
)
