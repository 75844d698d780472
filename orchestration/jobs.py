"""Jobs over the drop graph; a run covers one drop (its partition) or a batch of neighbouring drops (a range),
and is tagged with them (`drop`, `drops`).

Which trigger runs which job is the table in README ("Drops over time: who runs what"): only `drop_graph` (a click or the
CLI) and `regenerate_campaigns` (the weekly schedule) include the billed `campaign_images`.
"""

from dagster import AssetSelection, define_asset_job

from assets_pkg.assets import campaign_images, campaign_selects, product_drops

# raw_product_images, product_catalog, clip_embeddings, product_image_collection
CATALOG = AssetSelection.groups("catalog")

drop_graph_job = define_asset_job(
    "drop_graph",
    selection=AssetSelection.all(),
    partitions_def=product_drops,
    description="Every step for one product drop, campaign images (billed) included: for a click or the CLI.",
)

ingest_drop_job = define_asset_job(
    "ingest_drop",
    selection=AssetSelection.all() - AssetSelection.assets(campaign_images).downstream(),
    partitions_def=product_drops,
    description="A new or changed drop: images, embeddings, Milvus rows, briefs and references; no billed "
                "generation (campaign images wait for the weekly run or a click).",
)

refresh_catalog_job = define_asset_job(
    "refresh_catalog",
    selection=CATALOG,
    partitions_def=product_drops,
    description="Re-scan a drop and bring its embeddings and Milvus rows in line with the folder (no-op if "
                "unchanged); references follow when the rows changed.",
)

regenerate_campaigns_job = define_asset_job(
    "regenerate_campaigns",
    selection=AssetSelection.groups("campaigns"),
    partitions_def=product_drops,
    description="Re-read briefs, re-retrieve references and generate campaign images whose inputs changed.",
)

collect_campaign_images_job = define_asset_job(
    "collect_campaign_images",
    selection=AssetSelection.assets(campaign_images).downstream(),
    partitions_def=product_drops,
    description="GEMINI_MODE=batch: write the images of a finished Batch API job (launched by the "
                "campaign_batches sensor; submits what is still needed, within GEMINI_MAX_COST_USD) "
                "and index them for search.",
)

publish_selects_job = define_asset_job(
    "publish_selects",
    selection=AssetSelection.assets(campaign_selects),
    partitions_def=product_drops,
    description="Publish a drop's approved campaign images to PUBLISH_DIR with their manifests, and remove "
                "those no longer approved (launched by the campaign_reviews sensor).",
)
