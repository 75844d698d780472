"""Whether a process on this machine is still running: the CLI's dead runs and a shared Milvus Lite file both
hinge on it."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but running
    return True
