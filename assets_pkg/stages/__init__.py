"""The stages of a drop, one folder each: `logic.py` (no Dagster), `asset.py`, and `checks.py` when the stage
checks its output in its own step. A stage declares the files it writes (`FILES` in its logic) and reads an
earlier stage's files through that stage's functions. assets_pkg/assets.py lists them (STAGES)."""
