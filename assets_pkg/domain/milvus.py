"""Talking to Milvus: pymilvus imported on first use, and which of its failures are worth another try.

Kept apart from store/, which is about a collection and its rows; this is about Milvus itself.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .processes import alive


@functools.cache
def pymilvus():
    """pymilvus, imported on first use: steps that never touch Milvus do not pay for it (about 1 s)."""
    try:
        import pymilvus
        import pymilvus.exceptions
    except Exception as e:  # pymilvus parses MILVUS_URI when imported and refuses anything but a server URL
        if os.environ.get("MILVUS_URI") and "uri" in str(e).lower():
            from .errors import StoreError

            raise StoreError("MILVUS_URI is set to something other than a server URL, which pymilvus refuses when "
                             "imported: name Drop Studio's Milvus DROP_STUDIO_MILVUS_URI instead") from None
        raise
    # pymilvus logs every failed RPC with a traceback; this module raises a one-line
    # StoreError for each instead, so keep only pymilvus's critical messages.
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    _lite_starts_when_ready()
    return pymilvus


LITE_START_WAIT_S = 0.5  # milvus-lite's own check that its server did not die at once


def _lite_starts_when_ready() -> None:
    """Milvus Lite starts a server process per file opened and then sleeps a fixed half second to see whether
    it died (`Server.start` waits 0.5 s on the process). Its socket is there after 10-20 ms: wait for that
    instead (until it takes a connection), still answering "died" for a process that exits first. A run opens its Lite files two or three
    times, and the page and every search once, so each open costs 0.03 s instead of 0.52 s."""
    try:
        import milvus_lite.server as lite
    except ImportError:  # a server URI only: nothing to start
        return
    import socket
    import subprocess
    import time

    if getattr(lite.subprocess, "lite_starts_when_ready", False):
        return

    class Popen(subprocess.Popen):
        def wait(self, timeout=None):
            address = str(self.args[2]) if isinstance(self.args, list) and len(self.args) > 2 else ""
            if timeout != LITE_START_WAIT_S or not address.startswith("unix:"):
                return super().wait(timeout)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.poll() is not None:
                    return self.returncode
                if _accepts(address.removeprefix("unix:")):
                    break
                time.sleep(0.005)
            raise subprocess.TimeoutExpired(self.args, timeout)  # what Server.start takes for "it runs"

    def _accepts(path: str) -> bool:
        # The socket file appears before the server listens on it: it is ready once a connection is taken.
        if not os.path.exists(path):
            return False
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(path)
                return True
            except OSError:
                return False

    class Subprocess:  # milvus_lite.server's `subprocess`, with that Popen
        lite_starts_when_ready = True

        def __getattr__(self, name):
            return getattr(subprocess, name)

    Subprocess.Popen = Popen
    lite.subprocess = Subprocess()


# Operations safe to repeat after a transient failure (not creating a collection, nor reading the
# next page of a query iterator, which may already have moved on).
IDEMPOTENT = frozenset({"has_collection", "describe_collection", "load_collection", "upsert", "delete", "flush",
                        "query", "query_iterator", "count", "search", "get", "get_server_version"})


def _causes(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:  # pymilvus chains can loop
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _grpc_code(exc: BaseException) -> str:
    for e in _causes(exc):
        code = getattr(e, "code", None)
        if callable(code):
            try:
                return str(getattr(code(), "name", code()))
            except Exception:  # not a grpc error after all
                continue
    return ""


def is_auth_error(exc: BaseException) -> bool:
    return _grpc_code(exc) in ("UNAUTHENTICATED", "PERMISSION_DENIED")


def is_transient(exc: BaseException) -> bool:
    """Server restarting or unreachable for a moment: worth another try."""
    if _grpc_code(exc) in ("UNAVAILABLE",):
        return True
    text = " ".join(str(getattr(e, "message", e)) for e in _causes(exc))
    return bool(re.search(r"Fail connecting to server|server unavailable|connection refused|not ready", text, re.I))


def is_lite_uri(uri: str) -> bool:
    return not re.match(r"^(https?|tcp|grpc|unix)://", uri)


def display_uri(uri: str) -> str:
    """The URI without a user or password in it: what logs, metadata and keys may hold."""
    if is_lite_uri(uri):
        return uri
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


# -- a Milvus Lite file shared by the process that has it open -------------------------------------
# A Lite file is served by a Milvus process its opener starts, on a local socket. `drop-studio serve` keeps the
# file open all day, so it names that socket in a file beside the Lite file, and runs that find the file taken
# work through the same Milvus process instead of waiting for it (milvus-lite stops that process when its
# opener exits: a stale note names a dead process and a socket that is gone, and is ignored).
def _share_note(path: str) -> Path:
    return Path(f"{path}.shared.json")


def share_lite(path: str) -> None:
    """Name the socket of the Lite file this process has open, for other processes to use."""
    from milvus_lite.server_manager import server_manager_instance

    uri = server_manager_instance.start_and_get_uri(path)  # the server this process runs already
    note = _share_note(path)
    tmp = note.with_name(f".{note.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "uri": uri}))
    tmp.replace(note)


def unshare_lite(path: str) -> None:
    note = _share_note(path)
    try:
        if json.loads(note.read_text()).get("pid") == os.getpid():
            note.unlink()
    except (OSError, ValueError):
        pass


def shared_lite_uri(path: str) -> str | None:
    """The socket of the Milvus process serving the Lite file at `path` for its opener, if one is up."""
    try:
        doc = json.loads(_share_note(path).read_text())
        pid, uri = int(doc["pid"]), str(doc["uri"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not alive(pid):
        return None
    return uri if uri.startswith("unix:") and os.path.exists(uri[len("unix:"):]) else None


def lite_fingerprint(uri: str) -> str | None:
    """Size and modification time of a Milvus Lite file; None for a server. Reading the collection leaves
    the file as it is, so an equal fingerprint means nobody has written to it since."""
    if not is_lite_uri(uri):
        return None
    try:
        st = os.stat(uri)
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def campaign_collection(collection: str) -> str:
    """The collection of a drop's generated campaign images (stages/campaign_index)."""
    return f"{collection}_campaigns"


def campaign_uri(uri: str) -> str:
    """The same Milvus server; for Milvus Lite, a file of its own beside the product file."""
    if not is_lite_uri(uri):
        return uri
    path = Path(uri)
    return str(path.with_name(f"{path.stem}-campaigns{path.suffix}"))
