"""Listing drops and artifacts, locally or in an object store, without reading any content: the files
under a folder with each one's size and version (what the sensor and the caches compare), and the
folders right under a root."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from .storage import AnyPath, errors, is_remote


@dataclass(frozen=True)
class Entry:
    """A file under a folder, as its listing shows it: no content is read."""

    rel: str  # posix path relative to the folder listed
    path: AnyPath
    size: int
    version: str  # local: modification time in ns; object store: ETag (or generation, or mtime)
    problem: str | None = None  # why it cannot be read, when the listing already tells


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _object_version(info: dict) -> str:
    for key in ("ETag", "etag", "generation", "mtime", "LastModified", "updated"):
        if info.get(key) not in (None, ""):
            return str(info[key]).strip('"')
    return ""


def added_at(path: AnyPath) -> float | None:
    """When the file came to be where it is (seconds since the epoch): its modification time on disk, or the
    object's last write in a bucket; None when it is gone. A copy that kept its original's time (`cp -p`,
    `rsync -a`, unzip) reports that time."""
    try:
        if not is_remote(path):
            return os.stat(path).st_mtime
        with errors(path):
            info = path.fs.info(path.path)
    except FileNotFoundError:
        return None
    for key in ("LastModified", "updated", "mtime", "last_modified"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str) and value:
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def version_of(path: AnyPath) -> str | None:
    """One file's size and version as its listing would show them (`size-version`); None when it is gone."""
    try:
        if not is_remote(path):
            st = os.stat(path)
            return f"{st.st_size}-{st.st_mtime_ns}"
        with errors(path):
            info = path.fs.info(path.path)
    except FileNotFoundError:
        return None
    return f"{int(info.get('size') or 0)}-{_object_version(info)}"


def as_iso(seconds: float | None) -> str:
    """A time from `added_at` as UTC ISO 8601 to the second; "" for an unknown one."""
    return "" if seconds is None else datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def list_files(folder: AnyPath) -> list[Entry]:
    """Every visible file under `folder` (hidden names and folders are skipped), sorted by path: one
    recursive listing in an object store, a directory walk locally. A folder or prefix that does not exist
    has no files (a missing bucket is still an error)."""
    if is_remote(folder):
        with errors(folder):
            # What is there now: fsspec may hold an earlier listing of the prefix (from before this
            # process wrote into it), and a listing is what the stages compare versions against.
            folder.fs.invalidate_cache(folder.path)
            found = folder.fs.find(folder.path, detail=True)
        base = folder.path.rstrip("/") + "/"
        entries = []
        for key, info in found.items():
            rel = key[len(base):] if key.startswith(base) else None
            if not rel or _hidden(rel) or info.get("type") == "directory":
                continue
            entries.append(Entry(rel, folder / rel, int(info.get("size") or 0), _object_version(info)))
        return sorted(entries, key=lambda e: e.rel)
    return sorted(_walk(folder), key=lambda e: e.rel)


def list_tree(root: AnyPath) -> dict[str, list[Entry]]:
    """`list_files` of every folder right under `root`, by folder name. In an object store this is one
    recursive listing of the whole prefix (a request per 1,000 objects), not one per folder (at least a
    request each, so a thousand drops cost a thousand requests)."""
    if not is_remote(root):
        return {name: list_files(root / name) for name, is_dir in list_folders(root) if is_dir}
    with errors(root):
        found = root.fs.find(root.path, detail=True)
    base = root.path.rstrip("/") + "/"
    tree: dict[str, list[Entry]] = {}
    for key, info in found.items():
        rel = key[len(base):] if key.startswith(base) else ""
        folder, _, inner = rel.partition("/")
        if not inner or _hidden(rel) or info.get("type") == "directory":
            continue
        tree.setdefault(folder, []).append(Entry(inner, root / folder / inner, int(info.get("size") or 0),
                                                 _object_version(info)))
    return {name: sorted(entries, key=lambda e: e.rel) for name, entries in tree.items()}


def _walk(folder: Path) -> Iterator[Entry]:
    """The files under a local folder, hidden ones and folder links skipped, from `os.scandir` (the type of
    each entry comes with the listing, so a plain file costs one stat: the sensor walks every drop each
    tick)."""
    root: Path | None = None  # resolved only when there is a link to check
    stack = [(folder, "")]
    while stack:
        where, prefix = stack.pop()
        try:
            with os.scandir(where) as it:
                entries = list(it)
        except OSError:
            continue  # an unreadable sub-folder lists nothing, as os.walk has it
        for e in entries:
            if e.name.startswith("."):
                continue
            rel, full = prefix + e.name, Path(e.path)
            try:
                link = e.is_symlink()
                if e.is_dir():
                    if not link:  # a link to a folder is not followed
                        stack.append((full, rel + "/"))
                    continue
                if link:
                    root = root or folder.resolve()
                    if not full.resolve().is_relative_to(root):
                        yield Entry(rel, full, 0, "", "symbolic link leaves the drop folder")
                        continue
                st = e.stat()
            except OSError as err:
                yield Entry(rel, full, 0, "", f"unreadable: {err.strerror or err}")
                continue
            if not stat.S_ISREG(st.st_mode):  # a FIFO or device named *.png must not block a read
                yield Entry(rel, full, 0, "", "not a regular file")
                continue
            yield Entry(rel, full, int(st.st_size), str(st.st_mtime_ns))


def list_folders(root: AnyPath) -> list[tuple[str, bool]]:
    """(name, is a folder) for each visible entry right under `root`, sorted."""
    if is_remote(root):
        with errors(root):
            infos = root.fs.ls(root.path, detail=True)
        found = {(info["name"].rstrip("/").rsplit("/", 1)[-1], info.get("type") == "directory") for info in infos}
    else:
        found = {(entry.name, entry.is_dir()) for entry in os.scandir(root)}
    return sorted((name, is_dir) for name, is_dir in found if name and not name.startswith("."))
