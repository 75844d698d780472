"""Drop Studio: product-image drops -> CLIP embeddings -> Milvus -> campaign images.

`assets_pkg.domain` holds the domain code (no Dagster imports); `assets_pkg.assets`
and `assets_pkg.resources` wrap it as Dagster software-defined assets.
"""
