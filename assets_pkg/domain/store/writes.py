"""Writing a drop's rows: exactly the rows that changed, two batches in flight, deletes only of its own ids."""

from __future__ import annotations

import itertools
import json
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

import numpy as np

from ..drops import validate_drop_name
from ..errors import StoreError
from ..milvus import is_lite_uri
from ..products import search_text
from .rows import NO_SCORES, PRODUCT_FIELDS, SCORE_FIELDS, RowFacts, SyncReport, checked_ids, row_facts, row_id

WRITE_BATCH = 500
UPSERTS_IN_FLIGHT = 2


class Writes:
    def _row(self, drop: str, r: dict) -> dict:
        facts = row_facts(r)
        return {
            "id": row_id(drop, r["sha256"]), "drop": drop, "sha256": r["sha256"], "path": r["path"],
            "aliases": json.dumps(list(facts.aliases), ensure_ascii=False), "width": int(r["width"]),
            "height": int(r["height"]), **dict(zip(PRODUCT_FIELDS, facts.product)),
            "text": search_text(r["path"], facts.aliases, r.get("product")),
            "vector": np.asarray(r["vector"], dtype=np.float32).tolist(),
            **(dict(zip(SCORE_FIELDS, facts.scores or NO_SCORES)) if SCORE_FIELDS[0] in self._fields() else {}),
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
        # Scores count where rows hold them (or will, once this store brings its collection to that schema).
        scored = self.scores or (self.exists() and SCORE_FIELDS[0] in self._fields())
        facts = row_facts if scored else (lambda r: row_facts(r)._replace(scores=()))
        return [r for r in rows if rewrite_all or current.get(row_id(drop, r["sha256"])) != facts(r)]

    def sync_drop(self, drop: str, rows: Sequence[dict], dim: int, rewrite_all: bool = False,
                  write: Sequence[dict] | None = None) -> SyncReport:
        """Make the drop's rows exactly `rows` (keys sha256, path, aliases, width, height, vector, product):
        upsert `write` (the rows a caller chose and encoded; each has its vector) or else `changed_rows`,
        delete the rest, and flush only if something was written. With `write`, only those rows are sent:
        a row another writer changed meanwhile is not written without its vector."""
        self.ensure_collection(dim)
        current = self.rows_of_drop(drop)
        wanted = {row_id(drop, r["sha256"]): r for r in rows}
        changed = self.changed_rows(drop, rows, rewrite_all, current) if write is None else list(write)
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
