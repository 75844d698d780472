"""The Dagster code location (definitions.py) and its triggers: jobs, schedules and sensors. The `drop-studio`
CLI is assets_pkg/cli."""
