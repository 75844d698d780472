"""The Milvus collection of product images, through `pymilvus.MilvusClient`.

One explicit schema; the primary key is `<drop>/<sha256 of the image bytes>`,
so re-running a drop upserts the same rows instead of adding duplicates, and
the same picture in two drops is two rows (searches filtered by drop stay
right). Works with a Milvus Lite file (`data/milvus.db`) or a server
(`http://host:19530` with a token).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
from filelock import FileLock, Timeout

from .drops import validate_drop_name
from .errors import StoreError
from .milvus import IDEMPOTENT, is_auth_error, is_lite_uri, is_transient, lite_fingerprint, pymilvus
from .settings import DEFAULTS

if TYPE_CHECKING:  # imported on first use (milvus.pymilvus), not here
    from pymilvus import MilvusClient

__all__ = ["ProductImageStore", "Hit", "SyncReport", "row_id", "drop_filter", "checked_ids", "is_lite_uri",
           "lite_fingerprint", "MAX_TOP_K"]

COLLECTION_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
FIELDS = ("id", "drop", "sha256", "path", "aliases", "width", "height", "vector")
WRITE_BATCH = 500
MAX_TOP_K = 1000


def row_id(drop: str, sha256: str) -> str:
    return f"{drop}/{sha256}"


def drop_filter(drop: str) -> str:
    """`drop == "<name>"` from a validated name; json.dumps quotes it as a string literal."""
    return f"drop == {json.dumps(validate_drop_name(drop))}"


def checked_ids(drop: str, ids: Sequence[str]) -> list[str]:
    """`ids`, each a well-formed row id of `drop`: a delete never reaches another drop's rows."""
    prefix = validate_drop_name(drop) + "/"
    for i in ids:
        if not (isinstance(i, str) and i.startswith(prefix) and re.fullmatch(r"[0-9a-f]{64}", i[len(prefix):])):
            raise StoreError(f"refusing to delete {i!r}: not a row id of drop {drop!r}")
    return list(ids)


@dataclass(frozen=True)
class SyncReport:
    """What `sync_drop` did, and the drop's row ids afterwards (read back, not assumed)."""

    upserted: int
    deleted: int
    unchanged: int
    ids: frozenset[str]
    collection_rows: int


@dataclass(frozen=True)
class Hit:
    id: str
    drop: str
    path: str  # relative to the drop folder
    score: float  # cosine similarity
    aliases: tuple[str, ...] = ()

    @property
    def sha256(self) -> str:
        return self.id.rsplit("/", 1)[-1]


class ProductImageStore:
    """Use as a context manager: `with ProductImageStore(uri) as store: ...`.

    A Milvus Lite file can be open in one process at a time, so for Lite the
    store holds a file lock while open; other runs wait for it (up to
    `lock_timeout` seconds) instead of failing.
    """

    def __init__(
        self,
        uri: str = DEFAULTS["MILVUS_URI"],
        token: str | None = None,
        collection: str = DEFAULTS["MILVUS_COLLECTION"],
        lock_timeout: float = 600,
        timeout: float = DEFAULTS["MILVUS_TIMEOUT_S"],
        retries: int = DEFAULTS["MILVUS_RETRIES"],
        retry_delay: float = 0.5,
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
        self.fingerprint_at_close: str | None = None
        self._lock: FileLock | None = None

    # -- connection --------------------------------------------------------
    def _clean(self, msg: str) -> str:
        msg = str(msg).splitlines()[0] if str(msg) else ""
        return msg.replace(self._token, "***") if self._token else msg

    def open(self) -> "ProductImageStore":
        if self._client is not None:
            return self
        if is_lite_uri(self.uri):
            path = Path(self.uri)
            if path.is_dir():
                raise StoreError(
                    f"MILVUS_URI={self.uri} is a folder, written by the pure-Python Milvus Lite 3.x; Drop Studio "
                    f"uses Milvus Lite 2.5, which keeps one file. Delete the folder and run again: the "
                    f"embeddings in ARTIFACTS_DIR are reused, nothing is embedded twice"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(str(path) + ".lock")
            try:
                self._lock.acquire(timeout=self.lock_timeout)
            except Timeout:
                raise StoreError(
                    f"MILVUS_URI={self.uri}: Milvus Lite file still in use by another run after {self.lock_timeout:.0f}s"
                ) from None
        try:
            self._client = pymilvus().MilvusClient(uri=self.uri, token=self._token, timeout=self.timeout)
        except Exception as e:
            self._release()
            what = "Milvus Lite file cannot be opened (in use by another process?)" if is_lite_uri(self.uri) \
                else "cannot connect to Milvus (is the server running and reachable?)"
            if is_auth_error(e):
                what = "authentication failed: Milvus rejected the user or password in MILVUS_TOKEN"
            raise StoreError(f"MILVUS_URI={self.uri}: {what} ({type(e).__name__}: {self._clean(e)})") from None
        try:
            if self.exists():
                # A reopened Milvus Lite file (or a released collection) must be loaded before search/query.
                self._call("load_collection", self._client.load_collection, self.collection)
        except StoreError:
            self.close()
            raise
        return self

    def _release(self):
        if self._lock is not None and self._lock.is_locked:
            self._lock.release()
        self._lock = None

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
                if is_lite_uri(self.uri):
                    # The in-process Lite server outlives the client and keeps the data folder
                    # locked; stop it so the next process (after our file lock) can open the file.
                    from milvus_lite.server_manager import server_manager_instance

                    server_manager_instance.release_server(self.uri)
                    # Taken before the lock goes: the file exactly as this store left it.
                    self.fingerprint_at_close = lite_fingerprint(self.uri)
            finally:
                self._client = None
                self._release()

    def __enter__(self) -> "ProductImageStore":
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
        a dropped connection) are retried `retries` times with exponential backoff; each try is bounded
        by the client's `timeout`. Anything else, or the last failure, becomes a one-line StoreError."""
        delay = self.retry_delay
        for attempt in range(self.retries + 1):
            try:
                return fn(*args, **kwargs)
            except pymilvus().exceptions.MilvusException as e:
                if attempt < self.retries and what in IDEMPOTENT and is_transient(e):
                    logging.getLogger(__name__).warning(
                        "Milvus %s at %s failed (%s); try %d of %d in %.1fs",
                        what, self.uri, self._clean(e.message), attempt + 2, self.retries + 1, delay)
                    time.sleep(delay)
                    delay *= 2
                    continue
                reason = "authentication failed" if is_auth_error(e) else self._clean(e.message)
                tries = f" after {attempt + 1} tries" if attempt else ""
                raise StoreError(f"Milvus {what} failed on {self.collection} at {self.uri}{tries}: {reason}") from None

    # -- schema ------------------------------------------------------------
    def exists(self) -> bool:
        return bool(self._call("has_collection", self.client.has_collection, self.collection))

    def dim(self) -> int | None:
        if not self.exists():
            return None
        desc = self._call("describe_collection", self.client.describe_collection, self.collection)
        for f in desc["fields"]:
            if f["name"] == "vector":
                return int(f["params"]["dim"])
        return None

    def ensure_collection(self, dim: int) -> None:
        """Create the collection if missing; refuse one whose schema does not match."""
        if self.exists():
            desc = self._call("describe_collection", self.client.describe_collection, self.collection)
            names = {f["name"] for f in desc["fields"]}
            have = self.dim()
            if names != set(FIELDS) or have != dim:
                raise StoreError(
                    f"collection {self.collection!r} at {self.uri} has fields {sorted(names)} and dim {have}, "
                    f"but this model needs dim {dim}; set MILVUS_COLLECTION to a new name"
                )
            self._call("load_collection", self.client.load_collection, self.collection)
            return
        DataType = pymilvus().DataType
        schema = pymilvus().MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=160)
        schema.add_field("drop", DataType.VARCHAR, max_length=64)
        schema.add_field("sha256", DataType.VARCHAR, max_length=64)
        schema.add_field("path", DataType.VARCHAR, max_length=1024)
        schema.add_field("aliases", DataType.VARCHAR, max_length=8192)  # JSON list of other names of the same bytes
        schema.add_field("width", DataType.INT32)
        schema.add_field("height", DataType.INT32)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
        # Strong consistency: a search right after an upsert in the same run must see the new rows.
        self._call(
            "create_collection",
            self.client.create_collection,
            self.collection,
            schema=schema,
            index_params=index,
            consistency_level="Strong",
        )
        self._call("load_collection", self.client.load_collection, self.collection)

    # -- writes ------------------------------------------------------------
    def upsert_drop(self, drop: str, rows: Iterable[dict]) -> int:
        """Upsert rows with keys sha256, path, aliases, width, height, vector; returns rows written.

        Always upserts (never inserts): Milvus does not deduplicate primary keys on insert, so a
        repeated or retried batch, or two runs writing at once, could otherwise leave a row twice."""
        validate_drop_name(drop)
        written = 0
        batch: list[dict] = []

        def send() -> int:
            nonlocal batch
            chunk, batch = batch, []
            if not chunk:
                return 0
            res = self._call("upsert", self.client.upsert, self.collection, chunk)
            return int(res.get("upsert_count", len(chunk)))

        for r in rows:
            batch.append(
                {
                    "id": row_id(drop, r["sha256"]),
                    "drop": drop,
                    "sha256": r["sha256"],
                    "path": r["path"],
                    "aliases": json.dumps(list(r.get("aliases") or []), ensure_ascii=False),
                    "width": int(r["width"]),
                    "height": int(r["height"]),
                    "vector": np.asarray(r["vector"], dtype=np.float32).tolist(),
                }
            )
            if len(batch) >= WRITE_BATCH:
                written += send()
        return written + send()

    def delete_ids(self, drop: str, ids: Sequence[str]) -> int:
        ids = checked_ids(drop, ids)
        for i in range(0, len(ids), WRITE_BATCH):
            self._call("delete", self.client.delete, self.collection, ids=ids[i : i + WRITE_BATCH])
        return len(ids)

    def sync_drop(self, drop: str, rows: Sequence[dict], dim: int, rewrite_all: bool = False) -> SyncReport:
        """Make the drop's rows exactly `rows` (keys sha256, path, aliases, width, height, vector): upsert
        the new and the changed (path or aliases; every row with `rewrite_all`, after a model change),
        delete the rest, and flush only if something was written."""
        self.ensure_collection(dim)
        current = self.rows_of_drop(drop)
        wanted = {row_id(drop, r["sha256"]): r for r in rows}
        changed = [r for i, r in wanted.items()
                   if rewrite_all or current.get(i) != (r["path"], tuple(r["aliases"]))]
        upserted = self.upsert_drop(drop, changed)
        deleted = self.delete_ids(drop, sorted(set(current) - set(wanted)))
        if upserted or deleted:
            self.flush()
        return SyncReport(upserted, deleted, len(wanted) - len(changed), frozenset(self.ids_of_drop(drop)),
                          self.count())

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """id -> stored vector, for the ids that are rows."""
        if not ids or not self.exists():
            return {}
        res = self._call("get", self.client.get, self.collection, ids=list(ids), output_fields=["vector"])
        return {r["id"]: np.asarray(r["vector"], dtype=np.float32) for r in res}

    def flush(self) -> None:
        """Seal what was written: persisted, and indexed in the background (unflushed rows are
        searched by brute force until then)."""
        self._call("flush", self.client.flush, self.collection)

    def remove_drop(self, drop: str) -> int:
        deleted = self.delete_ids(drop, sorted(self.ids_of_drop(drop)))
        self.flush()
        return deleted

    # -- reads -------------------------------------------------------------
    def rows_of_drop(self, drop: str) -> dict[str, tuple[str, tuple[str, ...]]]:
        """id -> (path, aliases) of every row of a drop, read page by page."""
        if not self.exists():
            return {}
        it = self._call(
            "query_iterator",
            self.client.query_iterator,
            self.collection,
            batch_size=1000,
            filter=drop_filter(drop),
            output_fields=["id", "path", "aliases"],
        )
        rows: dict[str, tuple[str, tuple[str, ...]]] = {}
        try:
            while True:
                page = self._call("query page", it.next)
                if not page:
                    break
                rows.update((r["id"], (r["path"], tuple(json.loads(r["aliases"] or "[]")))) for r in page)
        finally:
            it.close()
        return rows

    def ids_of_drop(self, drop: str) -> set[str]:
        return set(self.rows_of_drop(drop))

    def count(self, drop: str | None = None) -> int:
        if not self.exists():
            return 0
        res = self._call(
            "count",
            self.client.query,
            self.collection,
            filter=drop_filter(drop) if drop else "",
            output_fields=["count(*)"],
        )
        return int(res[0]["count(*)"])

    def search(self, vectors: np.ndarray, drop: str | None = None, top_k: int = 10) -> list[list[Hit]]:
        if not 1 <= top_k <= MAX_TOP_K:
            raise StoreError(f"top_k must be from 1 to {MAX_TOP_K}, got {top_k}")
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        res = self._call(
            "search",
            self.client.search,
            self.collection,
            data=vectors.tolist(),
            anns_field="vector",
            limit=top_k,
            filter=drop_filter(drop) if drop else "",
            output_fields=["drop", "path", "aliases"],
            search_params={"metric_type": "COSINE"},
        )
        out = []
        for hits in res:
            out.append(
                [
                    Hit(
                        id=h["id"],
                        drop=h["entity"]["drop"],
                        path=h["entity"]["path"],
                        score=float(h["distance"]),
                        aliases=tuple(json.loads(h["entity"].get("aliases") or "[]")),
                    )
                    for h in hits
                ]
            )
        return out
