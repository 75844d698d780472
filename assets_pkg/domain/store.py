"""The Milvus collection of product images, through `pymilvus.MilvusClient`.

One explicit schema; the primary key is `<drop>/<sha256 of the image bytes>`,
so re-running a drop upserts the same rows instead of adding duplicates, and
the same picture in two drops is two rows (searches filtered by drop stay
right). Works with a Milvus Lite file (`data/milvus.db`) or a server
(`http://host:19530` with a token).

Each row carries the product fields of the drop's catalog (sku, name, category, color, tags, attributes)
as scalar fields, and a `text` built from its file names and the catalog; on Milvus 2.5 and newer (and
Milvus Lite) a BM25 `Function` turns `text` into the sparse vector `text_sparse`, and a text search is
Milvus's own `hybrid_search` of CLIP (text to image) and BM25, fused by `RRFRanker`. Older servers have no
BM25: their collections have no `text_sparse`, and search is CLIP plus the exact filters.

A collection written by Drop Studio before the product fields existed (`FIELDS_V1`) is upgraded in place
the first time it is opened for writing: its rows, vectors included, are copied into the new schema, so
no image is encoded again.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, NamedTuple, Sequence

import numpy as np
from filelock import FileLock, Timeout
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from .drops import validate_drop_name
from .errors import StoreError
from .milvus import (IDEMPOTENT, is_auth_error, is_lite_uri, is_transient, lite_fingerprint, pymilvus, share_lite,
                     shared_lite_uri, unshare_lite)
from .products import SKU_RE, filter_value, search_text
from .settings import DEFAULTS

if TYPE_CHECKING:  # imported on first use (milvus.pymilvus), not here
    from pymilvus import MilvusClient

__all__ = ["ProductImageStore", "Hit", "SyncReport", "RowFacts", "row_id", "row_facts", "drop_filter",
           "filter_expr", "checked_ids", "is_lite_uri", "lite_fingerprint", "MAX_TOP_K", "LITE_LOCK_WAIT_S"]

COLLECTION_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
FIELDS_V1 = ("id", "drop", "sha256", "path", "aliases", "width", "height", "vector")
PRODUCT_FIELDS = ("sku", "name", "category", "color", "tags", "attributes")
FIELDS = ("id", "drop", "sha256", "path", "aliases", "width", "height", *PRODUCT_FIELDS, "text", "vector")
SPARSE = "text_sparse"  # BM25 of `text`, made by Milvus itself (absent on servers older than 2.5)
HIT_FIELDS = ["drop", "path", "aliases", "sku", "name", "category", "color"]
WRITE_BATCH = 500
UPSERTS_IN_FLIGHT = 2
# A run waits this long for a Milvus Lite file another process holds (runs queue on it).
LITE_LOCK_WAIT_S = 600
MAX_TOP_K = 100  # hits of one search: what the page shows, a brief retrieves, the CLI prints
# Each side of a hybrid search brings this many candidates (at least) for RRF to fuse: a row that only one
# side ranks highly must still meet the other side's ranking to be fused, not be cut off before it.
MIN_CANDIDATES = 50
RRF_K = 60  # RRF's damping constant, Milvus's default
BM25_SINCE = (2, 5)
PARTITION_KEY_SINCE = (2, 4)
# Recorded with each verified sync: a drop synced under an older schema opens the collection once more, so
# the first run after an upgrade brings the collection to this schema even when nothing else changed.
SCHEMA_VERSION = 2
NO_BM25 = ("Milvus at {uri} is {version}, which has no BM25 full-text search (Milvus 2.5 or newer has it): "
           "search uses CLIP and the exact filters (sku, category, color) only")


class RowFacts(NamedTuple):
    """What a row says besides its vector: a row whose facts are unchanged is not written again."""

    path: str
    aliases: tuple[str, ...]
    product: tuple  # sku, name, category, color, tags (JSON), attributes (JSON)


def _product_values(product: dict | None) -> tuple:
    p = product or {}
    return (p.get("sku", ""), p.get("name", ""), p.get("category", ""), p.get("color", ""),
            json.dumps(list(p.get("tags", [])), ensure_ascii=False),
            json.dumps(dict(p.get("attributes", {})), ensure_ascii=False, sort_keys=True))


def row_facts(row: dict) -> RowFacts:
    """The facts of a row to write (keys path, aliases and optionally product)."""
    return RowFacts(row["path"], tuple(row.get("aliases") or ()), _product_values(row.get("product")))


# What a row without product fields holds in them (and a row of the previous schema is read as holding).
NO_PRODUCT = dict(zip(PRODUCT_FIELDS, _product_values(None)))


def _stored_facts(r: dict) -> RowFacts:
    return RowFacts(r["path"], tuple(json.loads(r.get("aliases") or "[]")),
                    tuple(r.get(f, NO_PRODUCT[f]) for f in PRODUCT_FIELDS))


def row_id(drop: str, sha256: str) -> str:
    return f"{drop}/{sha256}"


def drop_filter(drop: str) -> str:
    """`drop == "<name>"` from a validated name; json.dumps quotes it as a string literal."""
    return f"drop == {json.dumps(validate_drop_name(drop))}"


def filter_expr(drop: str | None = None, where: dict | None = None) -> str:
    """A Milvus filter from validated values only: `drop == "a" and category == "footwear"`."""
    parts = [drop_filter(drop)] if drop else []
    for name, value in (where or {}).items():
        parts.append(f"{name} == {json.dumps(filter_value(name, value), ensure_ascii=False)}")
    return " and ".join(parts)


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
    score: float  # the rank score: cosine similarity (CLIP alone), or the RRF score of a hybrid search
    aliases: tuple[str, ...] = ()
    sku: str = ""
    name: str = ""
    category: str = ""
    color: str = ""
    match: str = "clip"  # clip, hybrid (CLIP + BM25), or sku (the query is this row's SKU)
    # The cosine similarity of the picture to the query (text or picture), whatever ranked it: the number a
    # person can read, where an RRF score only orders.
    similarity: float = 0.0
    # Why it was found: "sku" (the query is its SKU), "words" (the query's words in its name, catalog or file
    # name: `words`), "picture" (its picture is at least as like the query as a hit the picture alone found).
    why: tuple[str, ...] = ()
    words: tuple[str, ...] = ()

    @classmethod
    def from_milvus(cls, h: dict, match: str) -> "Hit":
        e = h["entity"]
        score = float(h["distance"])
        return cls(id=h["id"], drop=e["drop"], path=e["path"], score=score,
                   aliases=tuple(json.loads(e.get("aliases") or "[]")), sku=e.get("sku") or "",
                   name=e.get("name") or "", category=e.get("category") or "", color=e.get("color") or "",
                   match=match, similarity=score if match != "hybrid" else 0.0,
                   why=("sku",) if match == "sku" else ("picture",) if match == "clip" else ())

    @property
    def sha256(self) -> str:
        return self.id.rsplit("/", 1)[-1]


class ProductImageStore:
    """Use as a context manager: `with ProductImageStore(uri) as store: ...`.

    A Milvus Lite file can be open in one process at a time, so for Lite the
    store holds a file lock while open; other runs wait for it (up to
    `lock_timeout` seconds) instead of failing. A store opened with `share`
    (the search page's, open all day) lets other processes use its Milvus
    while it has the file, and they do instead of waiting (milvus.share_lite).
    """

    def __init__(
        self,
        uri: str = DEFAULTS["MILVUS_URI"],
        token: str | None = None,
        collection: str = DEFAULTS["MILVUS_COLLECTION"],
        lock_timeout: float = LITE_LOCK_WAIT_S,
        timeout: float = DEFAULTS["MILVUS_TIMEOUT_S"],
        retries: int = DEFAULTS["MILVUS_RETRIES"],
        retry_delay: float = 0.5,
        share: bool = False,
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
            self._connect_uri = self._take_lite_file(path)
        try:
            self._client = pymilvus().MilvusClient(uri=self._connect_uri or self.uri, token=self._token,
                                                   timeout=self.timeout)
            if self.share and self._lock is not None:
                share_lite(self.uri)
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
                raise StoreError(f"MILVUS_URI={self.uri}: Milvus Lite file still in use by another run after "
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

    # -- schema ------------------------------------------------------------
    def exists(self, collection: str | None = None) -> bool:
        return bool(self._call("has_collection", self.client.has_collection, collection or self.collection))

    def _fields(self, collection: str | None = None) -> dict[str, dict]:
        """The collection's fields by name; the store's own collection's are asked once (each search needs them)."""
        collection = collection or self.collection
        if collection == self.collection and self._schema is not None:
            return self._schema
        desc = self._call("describe_collection", self.client.describe_collection, collection)
        fields = {f["name"]: f for f in desc["fields"]}
        if collection == self.collection:
            self._schema = fields
        return fields

    def dim(self) -> int | None:
        if not self.exists():
            return None
        vector = self._fields().get("vector")
        return int(vector["params"]["dim"]) if vector else None

    @property
    def full_text(self) -> bool:
        """Whether the collection has BM25 full-text search (made on Milvus Lite or a 2.5+ server)."""
        if self._full_text is None:
            self._full_text = self.exists() and SPARSE in self._fields()
        return self._full_text

    def server_version(self) -> str:
        """The server's version (`v2.3.9`); Milvus Lite answers no such call, and is always 2.5."""
        if is_lite_uri(self.uri):
            return "Milvus Lite"
        return str(self._call("get_server_version", self.client.get_server_version))

    def _server_since(self, since: tuple[int, int], version: str | None = None) -> bool:
        m = re.match(r"v?(\d+)\.(\d+)", version or self.server_version())
        return bool(m) and (int(m[1]), int(m[2])) >= since

    def server_has_bm25(self, version: str | None = None) -> bool:
        return is_lite_uri(self.uri) or self._server_since(BM25_SINCE, version)

    def drop_is_partition_key(self, version: str | None = None) -> bool:
        """Whether a collection made here partitions by drop: on a server since 2.4. (Milvus 2.3 upserts
        every row of a partition-key collection into one partition, so a query filtered by drop then finds
        nothing; Milvus Lite keeps one partition anyway.)"""
        return not is_lite_uri(self.uri) and self._server_since(PARTITION_KEY_SINCE, version)

    def search_note(self) -> str | None:
        """One line when text search is CLIP alone here (a server older than 2.5, or a collection it made)."""
        version = self.server_version()  # asked once
        if not self.server_has_bm25(version):
            return NO_BM25.format(uri=self.uri.split("@")[-1], version=version)
        if self.exists() and not self.full_text:
            return (f"collection {self.collection!r} at {self.uri.split('@')[-1]} was made without BM25 (by a "
                    f"Milvus older than 2.5): search uses CLIP and the exact filters only; set MILVUS_COLLECTION to "
                    f"a new name to build one with full-text search")
        return None

    def ensure_collection(self, dim: int) -> None:
        """Create the collection if missing, upgrade one of the previous schema; refuse one that does not match."""
        upgrade = f"{self.collection}_upgrade"
        if not self.exists() and self.exists(upgrade):  # an upgrade stopped after dropping the old rows
            self._create(self.collection, dim)
            self._copy(upgrade, self.collection)
            self._call("drop_collection", self.client.drop_collection, upgrade)
        if self.exists():
            names = set(self._fields())
            have = self.dim()
            if names == set(FIELDS_V1) and have == dim:
                self._upgrade_v1(dim, upgrade)
                return
            if names - {SPARSE} != set(FIELDS) or have != dim:
                raise StoreError(
                    f"collection {self.collection!r} at {self.uri} has fields {sorted(names)} and dim {have}, "
                    f"but this model needs dim {dim}; set MILVUS_COLLECTION to a new name"
                )
            self._call("load_collection", self.client.load_collection, self.collection)
            return
        self._create(self.collection, dim)

    def _create(self, collection: str, dim: int) -> None:
        milvus = pymilvus()
        DataType = milvus.DataType
        version = self.server_version()
        bm25 = self.server_has_bm25(version)
        schema = milvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=160)
        # On a server the drop is the partition key, as Milvus recommends for many tenants: a search or
        # query filtered to a drop reads that drop's partition only.
        schema.add_field("drop", DataType.VARCHAR, max_length=64, is_partition_key=self.drop_is_partition_key(version))
        schema.add_field("sha256", DataType.VARCHAR, max_length=64)
        schema.add_field("path", DataType.VARCHAR, max_length=1024)
        schema.add_field("aliases", DataType.VARCHAR, max_length=8192)  # JSON list of other names of the same bytes
        schema.add_field("width", DataType.INT32)
        schema.add_field("height", DataType.INT32)
        schema.add_field("sku", DataType.VARCHAR, max_length=64)
        schema.add_field("name", DataType.VARCHAR, max_length=1024)
        schema.add_field("category", DataType.VARCHAR, max_length=256)
        schema.add_field("color", DataType.VARCHAR, max_length=256)
        schema.add_field("tags", DataType.VARCHAR, max_length=8192)  # JSON list
        schema.add_field("attributes", DataType.VARCHAR, max_length=16384)  # JSON object: the catalog's other columns
        schema.add_field("text", DataType.VARCHAR, max_length=16384, **({"enable_analyzer": True} if bm25 else {}))
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
        if bm25:
            schema.add_field(SPARSE, DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(milvus.Function(name="text_bm25", function_type=milvus.FunctionType.BM25,
                                                input_field_names=["text"], output_field_names=[SPARSE]))
            index.add_index(SPARSE, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        # Strong consistency: a search right after an upsert in the same run must see the new rows.
        self._call("create_collection", self.client.create_collection, collection, schema=schema,
                   index_params=index, consistency_level="Strong")
        self._call("load_collection", self.client.load_collection, collection)
        self._full_text = self._schema = None

    def _upgrade_v1(self, dim: int, upgrade: str) -> None:
        """Copy a collection of the previous schema into the new one under the same name, vectors and all:
        first into `<collection>_upgrade`, then back once the old one is dropped, so a stop at any point
        loses nothing (the next opening finishes the job)."""
        log = logging.getLogger(__name__)
        log.warning("upgrading Milvus collection %s at %s to the schema with product fields (no image is "
                    "encoded again)", self.collection, self.uri.split("@")[-1])
        if self.exists(upgrade):
            self._call("drop_collection", self.client.drop_collection, upgrade)
        self._create(upgrade, dim)
        self._copy(self.collection, upgrade)
        self._call("drop_collection", self.client.drop_collection, self.collection)
        self._full_text = self._schema = None
        self._create(self.collection, dim)
        self._copy(upgrade, self.collection)
        self._call("drop_collection", self.client.drop_collection, upgrade)

    def _copy(self, source: str, target: str) -> None:
        self._call("load_collection", self.client.load_collection, source)
        have = set(self._fields(source))
        fields = [f for f in FIELDS if f in have]
        for page in self._pages(source, "", fields):
            rows = []
            for r in page:
                aliases = json.loads(r.get("aliases") or "[]")
                row = {f: r.get(f) for f in FIELDS if f in have}
                row.update({f: r.get(f, NO_PRODUCT[f]) for f in PRODUCT_FIELDS})
                row["text"] = r.get("text") or search_text(r["path"], aliases, None)
                rows.append(row)
            self._call("upsert", self.client.upsert, target, rows)
        self._call("flush", self.client.flush, target)

    # -- writes ------------------------------------------------------------
    def _row(self, drop: str, r: dict) -> dict:
        facts = row_facts(r)
        return {
            "id": row_id(drop, r["sha256"]), "drop": drop, "sha256": r["sha256"], "path": r["path"],
            "aliases": json.dumps(list(facts.aliases), ensure_ascii=False), "width": int(r["width"]),
            "height": int(r["height"]), **dict(zip(PRODUCT_FIELDS, facts.product)),
            "text": search_text(r["path"], facts.aliases, r.get("product")),
            "vector": np.asarray(r["vector"], dtype=np.float32).tolist(),
        }

    def upsert_drop(self, drop: str, rows: Iterable[dict], new: bool = False) -> int:
        """Upsert rows with keys sha256, path, aliases, width, height, vector and optionally product (the
        catalog's fields for the image); returns rows written.

        Upserts, because Milvus does not deduplicate primary keys on insert: a repeated or retried batch, or
        two runs writing at once, could otherwise leave a row twice. Rows the caller knows are `new` (their
        ids are not in the collection) are inserted into Milvus Lite instead, where the file lock makes this
        store the only writer: Lite looks every upserted id up among all rows, so upserts slow down as the
        collection grows (10,000 rows took 6 s into an empty collection, 24 s into one of 190,000), while
        inserts do not. An insert that fails is sent again as an upsert, so a lost reply leaves no
        duplicate. Two batches are in flight at once: pymilvus turns the next batch into a request (Python,
        about 40% of a write's time) while Milvus writes the last one."""
        validate_drop_name(drop)
        insert = new and is_lite_uri(self.uri)

        def send(chunk: list[dict]) -> int:
            if insert:
                try:
                    res = self._call("insert", self.client.insert, self.collection, chunk)
                    return int(res.get("insert_count", len(chunk)))
                except StoreError:
                    pass  # written or not, the upsert below leaves each row once
            res = self._call("upsert", self.client.upsert, self.collection, chunk)
            return int(res.get("upsert_count", len(chunk)))

        written = 0
        in_flight: deque = deque()
        with ThreadPoolExecutor(max_workers=UPSERTS_IN_FLIGHT) as pool:
            built = (self._row(drop, r) for r in rows)
            while chunk := list(itertools.islice(built, WRITE_BATCH)):
                in_flight.append(pool.submit(send, chunk))
                if len(in_flight) >= UPSERTS_IN_FLIGHT:
                    written += in_flight.popleft().result()
            while in_flight:
                written += in_flight.popleft().result()
        return written

    def delete_ids(self, drop: str, ids: Sequence[str]) -> int:
        ids = checked_ids(drop, ids)
        for i in range(0, len(ids), WRITE_BATCH):
            self._call("delete", self.client.delete, self.collection, ids=ids[i : i + WRITE_BATCH])
        return len(ids)

    def changed_rows(self, drop: str, rows: Sequence[dict], rewrite_all: bool = False,
                     current: dict[str, RowFacts] | None = None) -> list[dict]:
        """The rows that must be written: new ones, and those whose names or product fields differ from the
        stored row; every row with `rewrite_all` (after a model change)."""
        current = self.rows_of_drop(drop) if current is None else current
        return [r for r in rows if rewrite_all or current.get(row_id(drop, r["sha256"])) != row_facts(r)]

    def sync_drop(self, drop: str, rows: Sequence[dict], dim: int, rewrite_all: bool = False) -> SyncReport:
        """Make the drop's rows exactly `rows` (keys sha256, path, aliases, width, height, vector, product):
        upsert `changed_rows`, delete the rest, and flush only if something was written."""
        self.ensure_collection(dim)
        current = self.rows_of_drop(drop)
        wanted = {row_id(drop, r["sha256"]): r for r in rows}
        changed = self.changed_rows(drop, rows, rewrite_all, current)
        new = [r for r in changed if row_id(drop, r["sha256"]) not in current]
        upserted = self.upsert_drop(drop, [r for r in changed if row_id(drop, r["sha256"]) in current]) \
            + self.upsert_drop(drop, new, new=True)
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
    def _pages(self, collection: str, filter: str, fields: list[str]):
        it = self._call("query_iterator", self.client.query_iterator, collection, batch_size=1000,
                        filter=filter, output_fields=fields)
        try:
            while True:
                page = self._call("query page", it.next)
                if not page:
                    break
                yield page
        finally:
            it.close()

    def rows_of_drop(self, drop: str) -> dict[str, RowFacts]:
        """id -> facts (path, aliases, product fields) of every row of a drop, read page by page."""
        if not self.exists():
            return {}
        have = set(self._fields())
        fields = ["id", "path", "aliases", *(f for f in PRODUCT_FIELDS if f in have)]
        return {r["id"]: _stored_facts(r) for page in self._pages(self.collection, drop_filter(drop), fields)
                for r in page}

    def ids_of_drop(self, drop: str) -> set[str]:
        if not self.exists():
            return set()
        return {r["id"] for page in self._pages(self.collection, drop_filter(drop), ["id"]) for r in page}

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

    def values(self, field: str, drop: str | None = None) -> dict[str, int]:
        """value -> rows, of one product field (non-empty values), for filter controls."""
        counts: dict[str, int] = {}
        if not self.exists() or field not in self._fields():
            return counts
        for page in self._pages(self.collection, filter_expr(drop), [field]):
            for r in page:
                if r[field]:
                    counts[r[field]] = counts.get(r[field], 0) + 1
        return dict(sorted(counts.items()))

    def search(self, vectors: np.ndarray, drop: str | None = None, top_k: int = 10,
               texts: Sequence[str] | None = None, where: dict | None = None) -> list[list[Hit]]:
        """The `top_k` best rows for each query vector (CLIP), filtered by drop and `where` (sku, category,
        color). With `texts` (the queries the vectors came from), each search is also a full-text one: rows
        whose SKU is the query come first, then Milvus fuses CLIP and BM25 (where the collection has it)."""
        if not 1 <= top_k <= MAX_TOP_K:
            raise StoreError(f"top_k must be from 1 to {MAX_TOP_K}, got {top_k}")
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        expr = filter_expr(drop, where)
        if not self.exists():
            return [[] for _ in vectors]
        have = self.dim()
        if have is not None and vectors.shape[1] != have:
            raise StoreError(f"collection {self.collection!r} at {self.uri} holds {have}-d vectors but the query is "
                             f"{vectors.shape[1]}-d: CLIP_MODEL is not the model the collection was built with (set "
                             f"it back, or run the drops with this model into a new MILVUS_COLLECTION)")
        fields = HIT_FIELDS if "sku" in self._fields() else HIT_FIELDS[:3]
        if texts is None:
            return [[Hit.from_milvus(h, "clip") for h in hits] for hits in self._dense(vectors, expr, top_k, fields)]
        out = []
        for vector, text in zip(vectors, texts):
            pinned = self._exact_sku(vector, text, expr, top_k, fields)
            if self.full_text and text.strip():
                rest = self._hybrid(vector, text, expr, top_k + len(pinned), fields)
            else:
                rest = [Hit.from_milvus(h, "clip") for h in self._dense(vector[None], expr, top_k + len(pinned),
                                                                        fields)[0]]
            seen = {h.id for h in pinned}
            out.append((pinned + [h for h in rest if h.id not in seen])[:top_k])
        return out

    def _dense(self, vectors: np.ndarray, expr: str, limit: int, fields: list[str]) -> list:
        return self._call("search", self.client.search, self.collection, data=vectors.tolist(), anns_field="vector",
                          limit=limit, filter=expr, output_fields=fields, search_params={"metric_type": "COSINE"})

    def _exact_sku(self, vector: np.ndarray, text: str, expr: str, top_k: int, fields: list[str]) -> list[Hit]:
        """Rows whose SKU is the query itself (any case), best CLIP match first."""
        token = text.strip()
        if "sku" not in fields or not SKU_RE.fullmatch(token):
            return []
        skus = json.dumps(sorted({token, token.upper(), token.lower()}))
        sku_expr = f"sku in {skus}" + (f" and {expr}" if expr else "")
        return [Hit.from_milvus(h, "sku") for h in self._dense(vector[None], sku_expr, top_k, fields)[0]]

    def _hybrid(self, vector: np.ndarray, text: str, expr: str, limit: int, fields: list[str]) -> list[Hit]:
        milvus = pymilvus()
        candidates = min(max(4 * limit, MIN_CANDIDATES), 16384)
        requests = [
            milvus.AnnSearchRequest(data=[vector.tolist()], anns_field="vector", param={"metric_type": "COSINE"},
                                    limit=candidates, expr=expr or None),
            milvus.AnnSearchRequest(data=[text], anns_field=SPARSE, param={"metric_type": "BM25"},
                                    limit=candidates, expr=expr or None),
        ]
        res = self._call("search", self.client.hybrid_search, self.collection, requests,
                         milvus.RRFRanker(RRF_K), limit=limit, output_fields=[*fields, "text", "vector"])
        return explain_hybrid(vector, text, [(Hit.from_milvus(h, "hybrid"), h["entity"]) for h in res[0]])


_WORDS = re.compile(r"\w+")


def query_words(text: str) -> set[str]:
    """The words BM25 compares (Milvus's standard analyzer: Unicode words, lower case)."""
    return {w.lower() for w in _WORDS.findall(text)}


def explain_hybrid(vector: np.ndarray, text: str, hits: list[tuple["Hit", dict]]) -> list["Hit"]:
    """Each fused hit with its picture's similarity to the query and why it was found, in the fused order.
    A hit none of whose words the query holds was found by its picture alone; one with the query's words is
    also a picture match when its picture is at least as like the query as such a hit."""
    asked = query_words(text)
    scored = []
    for hit, entity in hits:
        words = tuple(sorted(asked & query_words(entity.get("text") or "")))
        similarity = float(np.dot(np.asarray(entity["vector"], dtype=np.float32), vector))
        scored.append((hit, words, similarity))
    by_picture = [s for _, words, s in scored if not words]
    floor = min(by_picture) if by_picture else float("inf")
    out = []
    for hit, words, similarity in scored:
        why = (("words",) if words else ()) + (("picture",) if not words or similarity >= floor else ())
        out.append(replace(hit, similarity=similarity, why=why, words=words))
    return out
