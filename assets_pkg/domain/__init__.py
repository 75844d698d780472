"""Domain code: image catalog, briefs, CLIP encoder, Milvus store, image generators.

Nothing here imports Dagster, so the CLI, benchmarks and tests use it directly.
"""
