"""The page's Milvus: the product and campaign collections, opened on demand and kept open between
requests. A Milvus Lite file can be open in one process at a time: the page keeps it open and shares it,
so runs work through the page's Milvus while it searches; a request made while a run that started first
holds the file fails fast (503) with a clear message."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

from ..domain.errors import StudioError
from ..domain.milvus import campaign_collection
from ..domain.store import ImageCollection

if TYPE_CHECKING:
    from ..domain.search_models import ModelEntry

RETRY_OPEN_S = 2.0  # after Milvus could not be opened, requests answer 503 at once for this long


class Busy(StudioError):
    """Milvus cannot answer now (a run holds the Lite file, or the server is down)."""


class Collections:
    """The product and campaign collections, opened on demand and kept open, used by one request at a time.
    A Milvus Lite file stays open for as long as the page runs, shared: runs use this process's Milvus for
    it rather than wait for the file (domain/milvus.share_lite)."""

    def __init__(self, open_products: Callable[[], ImageCollection],
                 open_campaigns: Callable[[], ImageCollection]):
        self._open = (open_products, open_campaigns)  # each opens its collection of the first model
        self._lock = threading.RLock()
        self._store: ImageCollection | None = None
        self._campaigns: ImageCollection | None = None
        self._busy: tuple[float, str] | None = None  # when opening last failed, and why

    @contextmanager
    def use(self, model: "ModelEntry") -> Iterator[tuple[ImageCollection, ImageCollection]]:
        """The product and campaign stores, pointed at `model`'s collections."""
        with self._lock:
            if self._store is None:
                if self._busy is not None and time.monotonic() - self._busy[0] < RETRY_OPEN_S:
                    raise Busy(self._busy[1])  # at once: the requests queued behind a failed open need not wait
                stores = [open_store() for open_store in self._open]
                try:
                    for store in stores:
                        store.open()
                except StudioError as e:
                    for store in stores:
                        store.close()
                    self._busy = (time.monotonic(), str(e))
                    raise Busy(str(e)) from None
                self._store, self._campaigns = stores
                self._busy = None
            self._store.use_collection(model.collection)
            self._campaigns.use_collection(campaign_collection(model.collection))
            yield self._store, self._campaigns

    def close_now(self) -> None:
        for store in (self._store, self._campaigns):
            if store is not None:
                store.close()
        self._store = self._campaigns = None
