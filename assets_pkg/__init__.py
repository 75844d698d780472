"""Drop Studio: product-image drops -> CLIP embeddings -> Milvus -> campaign images.

`assets_pkg.domain` holds each stage's logic (no Dagster imports); `catalog/` and `campaigns/` wire the
stages as Dagster software-defined assets with their checks, and `resources.py` hands them domain objects.
"""
