"""Dagster definitions and the `drop-studio` CLI."""
