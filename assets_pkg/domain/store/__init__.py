"""A Milvus collection of images (a drop's product pictures, or its campaign images), through
`pymilvus.MilvusClient`.

One explicit schema; the primary key is `<drop>/<sha256 of the image bytes>`, so re-running a drop upserts
the same rows instead of adding duplicates, and the same picture in two drops is two rows (searches
filtered by drop stay right). Works with a Milvus Lite file (`data/milvus.db`) or a server
(`http://host:19530` with a token).

Each row carries the product fields of the drop's catalog (sku, name, category, color, tags, attributes)
as scalar fields, and a `text` built from its file names and the catalog; on Milvus 2.5 and newer (and
Milvus Lite) a BM25 `Function` turns `text` into the sparse vector `text_sparse`, and a text search is
a CLIP (text to image) search and a BM25 search, fused by reciprocal rank as Milvus's `RRFRanker` fuses
them (`fuse_ranks`; two searches cost less than Lite's `hybrid_search`). Older servers have no
BM25: their collections have no `text_sparse`, and search is CLIP plus the exact filters.

One module per role: rows.py (a row's id and facts, filters, hits), connection.py (the Lite file or the
server, retries), schema.py (creating and checking the collection), upgrade.py (the previous schema brought
to this one), writes.py, reads.py (queries and search).
"""

from ..milvus import is_lite_uri, lite_fingerprint
from .connection import LITE_LOCK_WAIT_S, Connection
from .reads import Reads, explain_hybrid, query_words
from .rows import (FIELDS, MAX_TOP_K, PRODUCT_FIELDS, Hit, RowFacts, SyncReport, checked_ids, drop_filter,
                   filter_expr, row_facts, row_id)
from .schema import BM25_SINCE, SCHEMA_VERSION, Schema
from .upgrade import FIELDS_V1, SchemaUpgrade
from .writes import Writes


class ImageCollection(Connection, Schema, SchemaUpgrade, Writes, Reads):
    """Use as a context manager: `with ImageCollection(uri) as images: ...`; see Connection for how a
    Milvus Lite file is shared between processes."""


ProductImageStore = ImageCollection  # the name of earlier releases, kept for scripts that import it

__all__ = ["ImageCollection", "ProductImageStore", "Hit", "SyncReport", "RowFacts", "row_id", "row_facts",
           "drop_filter", "filter_expr", "checked_ids", "is_lite_uri", "lite_fingerprint", "explain_hybrid",
           "query_words", "MAX_TOP_K", "LITE_LOCK_WAIT_S", "SCHEMA_VERSION", "BM25_SINCE", "FIELDS", "FIELDS_V1",
           "PRODUCT_FIELDS"]
