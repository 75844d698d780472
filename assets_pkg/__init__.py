"""Drop Studio: product-image drops -> CLIP embeddings -> Milvus -> campaign images.

`stages/` holds one folder per stage (its logic without Dagster, its asset, its checks), `assets.py` lists them,
`domain/` holds what the stages share, `resources.py` hands the assets domain objects; `cli/` and `web/` are
the command line and the search page.
"""
