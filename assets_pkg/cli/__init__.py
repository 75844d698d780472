"""`drop-studio`, the command line: commands.py (click) over the library, instance.py (the Dagster instance
the CLI records its runs in)."""

from .commands import main

__all__ = ["main"]
