"""What the stages share: drop folders and artifacts, storage, the stage record, the CLIP encoder, the Milvus
store, the image-model table and settings.

Nothing here imports Dagster (or a stage), so the stages, the CLI, the search page, benchmarks and tests
use it directly.
"""
