"""`drop-studio`, the command line: commands.py (click) over the library; the Dagster instance its runs are
recorded in is assets_pkg/instance.py, shared with the search page's revisions."""

from .commands import main

__all__ = ["main"]
