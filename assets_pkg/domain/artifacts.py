"""Where a drop's stages keep their outputs: plain files people can open, in a local folder or under an
object-store prefix (ARTIFACTS_DIR, see storage.py), one folder per drop: `<artifacts_dir>/<drop>/`.

This module knows no stage's files. Each stage declares the files it writes (`FILES` in
`stages/<stage>/logic.py`) and reads another stage's output through that stage's functions.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .storage import AnyPath, write_atomic


def write_json(path: AnyPath, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False).encode())


def read_json(path: AnyPath, default=None):
    try:
        return json.loads(storage.read_text(path))
    except FileNotFoundError:
        return default


def read_parquet(path: AnyPath) -> pa.Table:
    return pq.read_table(path if not storage.is_remote(path) else io.BytesIO(storage.read_bytes(path)))


def digest(obj, length: int = 32) -> str:
    """The one content hash of a JSON-able value (dict order does not matter): the first `length` hex digits
    of the SHA-256 of its sorted JSON. Every key of a stage's output is one (a campaign image's request key
    at full length)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def check_artifacts_dir(artifacts_dir: str | Path) -> None:
    """ARTIFACTS_DIR names a local folder, or a bucket that exists and answers: checked before a run starts."""
    storage.check_access(storage.location("ARTIFACTS_DIR", artifacts_dir))


@dataclass(frozen=True)
class DropArtifacts:
    root: AnyPath  # a local folder, or an object-store prefix (storage.py)

    @classmethod
    def at(cls, artifacts_dir: str | Path, drop: str) -> "DropArtifacts":
        return cls(storage.location("ARTIFACTS_DIR", artifacts_dir) / drop)

    def __truediv__(self, name: str) -> AnyPath:
        return self.root / name

    def read_json(self, name: str, default=None):
        return read_json(self.root / name, default)

    def write_json(self, name: str, obj) -> None:
        write_json(self.root / name, obj)

    def update_json(self, name: str, obj) -> bool:
        """Write `name` only when its content changes (an unchanged drop rewrites nothing); returns whether it did."""
        if self.read_json(name) == obj:
            return False
        self.write_json(name, obj)
        return True

    def sheet_path(self, name: str) -> AnyPath:
        """A contact sheet shown in the UI (`sheets/<name>.jpg`): every stage that draws one keeps it here."""
        return self.root / "sheets" / f"{name}.jpg"
