"""The connection to a collection's Milvus: a Milvus Lite file (locked while open, or shared by the process that
has it open) or a server, and every call through one retry rule."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from ..errors import StoreError
from ..milvus import (IDEMPOTENT, is_auth_error, is_lite_uri, is_transient, lite_fingerprint, pymilvus, share_lite,
                      shared_lite_uri, unshare_lite)
from ..settings import DEFAULTS
from .rows import COLLECTION_RE

if TYPE_CHECKING:  # imported on first use (milvus.pymilvus), not here
    from pymilvus import MilvusClient

# A run waits this long for a Milvus Lite file another process holds (runs queue on it).
LITE_LOCK_WAIT_S = 600


class Connection:
    """A connection to one collection of a Milvus (`use_collection` moves it to another of the same Milvus).

    A Milvus Lite file can be open in one process at a time, so for Lite the
    store holds a file lock while open; other runs wait for it (up to
    `lock_timeout` seconds) instead of failing. A store opened with `share`
    (the search page's, open all day) lets other processes use its Milvus
    while it has the file, and they do instead of waiting (milvus.share_lite).
    """

    def __init__(
        self,
        uri: str = DEFAULTS["DROP_STUDIO_MILVUS_URI"],
        token: str | None = None,
        collection: str = DEFAULTS["MILVUS_COLLECTION"],
        lock_timeout: float = LITE_LOCK_WAIT_S,
        timeout: float = DEFAULTS["MILVUS_TIMEOUT_S"],
        retries: int = DEFAULTS["MILVUS_RETRIES"],
        retry_delay: float = 0.5,
        share: bool = False,
        scores: bool = False,
    ):
        if not COLLECTION_RE.fullmatch(collection):
            raise StoreError(f"MILVUS_COLLECTION={collection!r} is not a valid collection name")
        self.uri = uri
        self._token = token or ""
        self.collection = collection
        self.lock_timeout = lock_timeout
        self.timeout = timeout
        self.retries = retries
        self.retry_delay = retry_delay
        self._client: "MilvusClient | None" = None
        self._full_text: bool | None = None
        self._schema: dict[str, dict] | None = None
        self.fingerprint_at_close: str | None = None
        self._lock: FileLock | None = None
        self._connect_uri: str | None = None  # another process's Milvus for this Lite file (it shares it)
        self.share = share
        self.scores = scores  # a campaign collection: its rows hold the images' scores (rows.SCORE_FIELDS)

    def _clean(self, msg: str) -> str:
        msg = str(msg).splitlines()[0] if str(msg) else ""
        return msg.replace(self._token, "***") if self._token else msg

    def open(self) -> "Connection":
        if self._client is not None:
            return self
        milvus = pymilvus()  # before taking the file: its own one-line error when it cannot be imported here
        if is_lite_uri(self.uri):
            path = Path(self.uri)
            if path.is_dir():
                raise StoreError(
                    f"DROP_STUDIO_MILVUS_URI={self.uri} is a folder, written by the pure-Python Milvus Lite 3.x; Drop Studio "
                    f"uses Milvus Lite 2.5, which keeps one file. Delete the folder and run again: the "
                    f"embeddings in ARTIFACTS_DIR are reused, nothing is embedded twice"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            self._connect_uri = self._take_lite_file(path)
        try:
            self._client = milvus.MilvusClient(uri=self._connect_uri or self.uri, token=self._token,
                                                   timeout=self.timeout)
            if self.share and self._lock is not None:
                share_lite(self.uri)
        except Exception as e:
            self._release()
            what = "Milvus Lite file cannot be opened (in use by another process?)" if is_lite_uri(self.uri) \
                else "cannot connect to Milvus (is the server running and reachable?)"
            if is_auth_error(e):
                what = "authentication failed: Milvus rejected the user or password in MILVUS_TOKEN"
            raise StoreError(f"DROP_STUDIO_MILVUS_URI={self.uri}: {what} ({type(e).__name__}: {self._clean(e)})") from None
        try:
            if self.exists():
                # A reopened Milvus Lite file (or a released collection) must be loaded before search/query.
                self._call("load_collection", self._client.load_collection, self.collection)
        except StoreError:
            self.close()
            raise
        return self

    def _take_lite_file(self, path: Path) -> str | None:
        """Take the Lite file's lock (None: this process opens the file), or the socket of the process that
        has it open and shares it (`share`); else wait for one or the other, up to `lock_timeout`."""
        lock = FileLock(str(path) + ".lock")
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                lock.acquire(timeout=0)
                self._lock = lock
                return None
            except Timeout:
                pass
            shared = shared_lite_uri(str(path))
            if shared is not None:
                return shared
            if time.monotonic() >= deadline:
                raise StoreError(f"DROP_STUDIO_MILVUS_URI={self.uri}: Milvus Lite file still in use by another run after "
                                 f"{self.lock_timeout:.0f}s")
            time.sleep(0.1)

    def use_collection(self, collection: str) -> None:
        """Point the store at another collection of the same Milvus, keeping the connection (the search page
        follows a switch of model without closing the Lite file it shares with runs)."""
        if collection == self.collection:
            return
        if not COLLECTION_RE.fullmatch(collection):
            raise StoreError(f"{collection!r} is not a valid collection name")
        self.collection = collection
        self._schema = self._full_text = None
        if self._client is not None and self.exists():
            self._call("load_collection", self._client.load_collection, self.collection)

    def _release(self):
        if self._lock is not None and self._lock.is_locked:
            self._lock.release()
        self._lock = None

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
                if is_lite_uri(self.uri) and self._connect_uri is None:
                    unshare_lite(self.uri)
                    # The in-process Lite server outlives the client and keeps the data folder
                    # locked; stop it so the next process (after our file lock) can open the file.
                    from milvus_lite.server_manager import server_manager_instance

                    server_manager_instance.release_server(self.uri)
                    # Taken before the lock goes: the file exactly as this store left it.
                    self.fingerprint_at_close = lite_fingerprint(self.uri)
            finally:
                self._client = None
                self._connect_uri = None
                self._schema = self._full_text = None
                self._release()

    def __enter__(self) -> "Connection":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def client(self) -> "MilvusClient":
        if self._client is None:
            self.open()
        return self._client

    def _call(self, what: str, fn, *args, **kwargs):
        """Run one Milvus operation. Transient failures of repeatable operations (a server restarting,
        a dropped connection) are retried `retries` times with exponential backoff (tenacity); each try is
        bounded by the client's `timeout`. Anything else, or the last failure, becomes a one-line StoreError."""
        milvus_error = pymilvus().exceptions.MilvusException

        def worth_another_try(e: BaseException) -> bool:
            return what in IDEMPOTENT and isinstance(e, milvus_error) and is_transient(e)

        def say_retry(state: RetryCallState) -> None:
            logging.getLogger(__name__).warning(
                "Milvus %s at %s failed (%s); try %d of %d in %.1fs", what, self.uri,
                self._clean(state.outcome.exception().message), state.attempt_number + 1, self.retries + 1,
                state.next_action.sleep)

        retrying = Retrying(stop=stop_after_attempt(self.retries + 1), reraise=True,
                            wait=wait_exponential(multiplier=self.retry_delay),
                            retry=retry_if_exception(worth_another_try), before_sleep=say_retry)
        try:
            return retrying(fn, *args, **kwargs)
        except milvus_error as e:
            tries = retrying.statistics.get("attempt_number", 1)
            reason = "authentication failed" if is_auth_error(e) else self._clean(e.message)
            after = f" after {tries} tries" if tries > 1 else ""
            raise StoreError(f"Milvus {what} failed on {self.collection} at {self.uri}{after}: {reason}") from None
