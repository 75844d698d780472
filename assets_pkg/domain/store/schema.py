"""The collection's schema: what the server can do (BM25, partition key), creating the collection, and
refusing one that does not match."""

from __future__ import annotations

import re

from ..errors import StoreError
from ..milvus import display_uri, is_lite_uri, pymilvus
from .rows import FIELDS, SCORE_FIELDS, SPARSE
from .upgrade import FIELDS_V1

# Recorded with each verified sync: a drop synced under an older schema opens the collection once more, so
# the first run after an upgrade brings the collection to this schema even when nothing else changed.
SCHEMA_VERSION = 2
BM25_SINCE = (2, 5)
PARTITION_KEY_SINCE = (2, 4)
NO_BM25 = ("Milvus at {uri} is {version}, which has no BM25 full-text search (Milvus 2.5 or newer has it): "
           "search uses CLIP and the exact filters (sku, category, color) only")


class Schema:
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
            return NO_BM25.format(uri=display_uri(self.uri), version=version)
        if self.exists() and not self.full_text:
            return (f"collection {self.collection!r} at {display_uri(self.uri)} was made without BM25 (by a "
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
                self._upgrade(dim, upgrade, "the schema with product fields")
                return
            if self.scores and names - {SPARSE} == set(FIELDS) and have == dim:
                self._upgrade(dim, upgrade, "the schema with its images' scores")
                return
            if names - {SPARSE} - set(SCORE_FIELDS) != set(FIELDS) or have != dim:
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
        if self.scores:
            schema.add_field("fidelity", DataType.FLOAT)
            schema.add_field("prompt_match", DataType.FLOAT)
            schema.add_field("flagged", DataType.BOOL)
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
        if bm25:
            schema.add_field(SPARSE, DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(milvus.Function(name="text_bm25", function_type=milvus.FunctionType.BM25,
                                                input_field_names=["text"], output_field_names=[SPARSE]))
            index.add_index(SPARSE, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        # Strong consistency: a search right after an upsert in the same run must see the new rows.
        self._call("create_collection", self.client.create_collection, collection, schema=schema,
                   consistency_level="Strong")
        # The indexes of an empty collection are ready at once: pymilvus's own wait (a fixed half second per
        # index, before it first asks) would add a second to every new collection; loading waits for them.
        self._call("create_index", self.client.create_index, collection, index, sync=False)
        self._call("load_collection", self.client.load_collection, collection)
        self._full_text = self._schema = None
