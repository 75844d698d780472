"""How every stage knows it has nothing to do.

A stage's outputs depend on its inputs and on nothing else. So each stage computes its inputs key (a digest
of exactly what its outputs depend on, from what the stages before it wrote), and keeps a record of the key
it last produced its outputs from. When the key is the same and the outputs are still intact, the stage
keeps them: nothing is read again, encoded, searched or billed. The key is also the asset's Dagster data
version (`drop_stage` in assets_pkg/stage.py), so automation follows real changes and nothing else.

Where a stage's output is small and costs nothing to recompute from its input (the catalog, the briefs), the
output is its own record: `DropArtifacts.update_json` rewrites it only when it changes, and its key is its
digest. Stages whose work is per item (the scan per file, the embeddings per content hash, the campaign
images per request) keep that finer reuse inside the stage; their stage key is still what their outputs
depend on.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from .artifacts import DropArtifacts, digest


def inputs_key(**inputs) -> str:
    """The key of a stage's inputs: changes exactly when one of them does."""
    return digest(inputs)


@dataclass(frozen=True)
class StageRecord:
    """The file in which a stage records the key its outputs were produced from, with the facts it reports."""

    art: DropArtifacts
    file: str
    # Releases before this mechanism wrote the key under their own name; reading it there keeps their
    # outputs (an upgrade re-encodes, re-searches and re-bills nothing).
    key_field: str = "inputs_key"

    @functools.cached_property
    def last(self) -> dict:
        """The record as the stage's previous run left it (read once: in a bucket each read is a request)."""
        return self.art.read_json(self.file, {})

    def kept(self, key: str, intact: Callable[[dict], bool] = lambda record: True) -> dict | None:
        """The record when the outputs are those of `key` and `intact` vouches they are still whole, else None."""
        record = self.last
        return record if key and record.get(self.key_field) == key and intact(record) else None

    def write(self, key: str, **facts) -> None:
        """Record `key` with `facts`; an unchanged record is not rewritten (an unchanged refresh writes nothing)."""
        self.art.update_json(self.file, {**facts, self.key_field: key})
