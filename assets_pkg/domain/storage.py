"""Where drops and artifacts live: a local folder, or an object-store URL (`s3://bucket/prefix`,
`gs://bucket/prefix`) through fsspec (s3fs, gcsfs) and universal-pathlib.

A local folder stays a plain `pathlib.Path`, so nothing changes for it. A URL becomes a `UPath` with the
same `/`, `.name`, `.parent` interface. Every read, write, listing and delete of drops and artifacts goes
through the functions here: they write whole objects (an object store has no rename, and a PUT is atomic
anyway), keep one request per operation where the store allows it, and turn the store's failures into one
line naming the URL (bucket missing, access denied, endpoint unreachable).

Credentials are never passed here: s3fs and gcsfs find them themselves (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance or pod role; GOOGLE_APPLICATION_CREDENTIALS or the
metadata server), and `AWS_ENDPOINT_URL` points s3fs at any S3-compatible store. Error messages have
the values of secret variables blanked, whatever the store put in them.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Union

from .errors import StudioError

if TYPE_CHECKING:  # universal-pathlib (and s3fs or gcsfs) are imported only for URLs
    from upath import UPath

URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
OBJECT_STORES = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}

# Options the filesystems get unless the user set them through fsspec's own configuration
# (FSSPEC_S3_<OPTION> / FSSPEC_GCS_<OPTION> environment variables or ~/.config/fsspec):
# - no listings cache: a sensor in a long-lived daemon must see today's objects, not its first listing;
# - bounded retries and connect timeout, so an unreachable endpoint fails in seconds, not minutes.
DEFAULT_OPTIONS = {
    "s3": {"use_listings_cache": False,
           "config_kwargs": {"connect_timeout": 5, "read_timeout": 60,
                             "retries": {"max_attempts": 3, "mode": "standard"}}},
    "gcs": {"use_listings_cache": False},
}

# Values that must never appear in an error message, whatever the store or SDK put in it.
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "GOOGLE_OAUTH_ACCESS_TOKEN")

AnyPath = Union[Path, "UPath"]


def is_remote(path) -> bool:
    return not isinstance(path, Path)


def storage_options(protocol: str) -> dict:
    import fsspec.config

    proto = OBJECT_STORES.get(protocol, protocol)
    return {**DEFAULT_OPTIONS.get(proto, {}), **fsspec.config.conf.get(proto, {})}


def location(setting: str, value: str | os.PathLike) -> AnyPath:
    """The folder a setting names: a local path, or an object-store URL."""
    m = URL_RE.match(str(value))
    if m is None:
        return Path(value)
    protocol = m.group(1).lower()
    if protocol == "file":
        return Path(str(value)[len("file://"):])
    if protocol not in OBJECT_STORES:
        raise StudioError(f"{setting}={value}: unsupported URL scheme {protocol!r}; use a local folder, "
                          f"s3://bucket/prefix or gs://bucket/prefix")
    try:
        from upath import UPath

        path = UPath(str(value).rstrip("/"), **storage_options(protocol))
        path.fs  # imports s3fs or gcsfs now, so a missing one is reported here
    except ImportError as e:
        raise StudioError(f"{setting}={value}: {protocol}:// needs the {e.name or 's3fs/gcsfs'} package "
                          f"(pip install {e.name or 's3fs gcsfs'})") from None
    if not path.path.strip("/"):
        raise StudioError(f"{setting}={value}: no bucket named")
    return path


def as_path(value: str | os.PathLike) -> AnyPath:
    """A path written by `str()` of a local path or a UPath, back as one of them."""
    return value if isinstance(value, Path) or hasattr(value, "fs") else location("path", value)


def bucket_of(path) -> str:
    return path.path.strip("/").split("/")[0]


def _redact(text: str) -> str:
    for var in SECRET_VARIABLES:
        secret = os.environ.get(var)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _endpoint(path) -> str:
    if getattr(path, "protocol", "") in ("s3", "s3a"):
        return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    if getattr(path, "protocol", "") in ("gs", "gcs"):
        return os.environ.get("STORAGE_EMULATOR_HOST") or "Google Cloud Storage"
    return "the object store"


def explain(e: BaseException, path) -> str | None:
    """One line for a failure of the object store behind `path`, or None when `e` is something else."""
    url = str(path)
    text = _first_line(e)
    name = type(e).__name__
    if isinstance(e, PermissionError) or any(c in text for c in ("AccessDenied", "InvalidAccessKeyId", "Forbidden")):
        return _redact(f"{url}: access denied by {_endpoint(path)} ({text}); check the credentials "
                       f"(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, the pod or instance role, "
                       f"GOOGLE_APPLICATION_CREDENTIALS) and the bucket's policy")
    if isinstance(e, FileNotFoundError) and "bucket" in text.lower():
        return _redact(f"{url}: bucket {bucket_of(path)!r} does not exist at {_endpoint(path)}")
    connection = ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionError", "ClientConnectorError",
                  "ServerDisconnectedError", "ConnectionRefusedError", "ReadTimeoutError", "TimeoutError")
    if name in connection or any(c in text for c in ("Could not connect", "Cannot connect", "Connection refused")):
        return _redact(f"{url}: cannot reach {_endpoint(path)} ({name}); is the endpoint up "
                       f"(AWS_ENDPOINT_URL for an S3-compatible store)?")
    return None


@contextlib.contextmanager
def errors(path) -> Iterator[None]:
    """Object-store failures under `path` become a StudioError of one line; local errors pass unchanged."""
    if not is_remote(path):
        yield
        return
    try:
        yield
    except StudioError:
        raise
    except Exception as e:
        message = explain(e, path)
        if message:
            raise StudioError(message) from None
        if isinstance(e, FileNotFoundError):  # a missing object: the caller decides what that means
            raise
        raise StudioError(_redact(f"{path}: {type(e).__name__}: {_first_line(e)}")) from None


# -- reading -------------------------------------------------------------------
def _remote_fs(path):
    """The path's filesystem through fsspec's instance cache, which is per process: a DataLoader worker
    forked from the run gets its own client instead of the parent's event loop."""
    import fsspec

    return fsspec.filesystem(path.protocol, **path.storage_options)


def read_bytes(path: AnyPath) -> bytes:
    """The whole file or object, in one request."""
    if not is_remote(path):
        return path.read_bytes()
    with errors(path):
        return _remote_fs(path).cat_file(path.path)


def read_text(path: AnyPath) -> str:
    return read_bytes(path).decode("utf-8")


def image_source(path: AnyPath):
    """What PIL's `Image.open` takes: the local path itself, or the object's bytes."""
    return path if not is_remote(path) else io.BytesIO(read_bytes(path))


def exists(path: AnyPath) -> bool:
    if not is_remote(path):
        return path.exists()
    with errors(path):
        return path.exists()


def is_folder(path: AnyPath) -> bool:
    """A local folder, or an object-store prefix that holds objects (or a bucket's root)."""
    if not is_remote(path):
        return path.is_dir()
    with errors(path):
        if path.path.strip("/") != bucket_of(path) and path.fs.isdir(path.path):
            return True
    # Not there (or the bucket's root): say so only once the bucket is known to exist and answer.
    check_access(path)
    return path.path.strip("/") == bucket_of(path)


def check_access(path: AnyPath) -> None:
    """For a URL: its bucket exists and answers these credentials (the prefix itself need not exist yet);
    one request. A local folder is created when first written."""
    if not is_remote(path):
        return
    with errors(path):
        try:
            path.fs.info(bucket_of(path))
        except FileNotFoundError:
            raise StudioError(f"{path}: bucket {bucket_of(path)!r} does not exist at {_endpoint(path)}") from None


# -- writing -------------------------------------------------------------------
Writer = Callable[[object], object]


def write_atomic(path: AnyPath, data: bytes | Writer) -> None:
    """Write `data` (bytes, or a function that writes to the file or buffer it is given) so that no reader
    ever sees half of it. Locally: a temporary name beside `path` (unique per process and thread, because two
    runs of one drop may write at once), then a rename. In an object store a PUT of the whole object is
    already atomic."""
    if is_remote(path):
        if not isinstance(data, bytes):
            buf = io.BytesIO()
            data(buf)
            data = buf.getvalue()
        with errors(path):
            path.write_bytes(data)  # no mkdir: a missing bucket must fail, not be created
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data) if isinstance(data, bytes) else data(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def remove(path: AnyPath) -> None:
    """Delete one file or object; a missing one is fine."""
    with errors(path):
        path.unlink(missing_ok=True)


def remove_tree(path: AnyPath) -> None:
    """Delete a folder or every object under a prefix; a missing one is fine."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    with errors(path):
        fs = path.fs
        if fs.exists(path.path):
            fs.rm(path.path, recursive=True)
