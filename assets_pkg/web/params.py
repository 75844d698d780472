"""The search page's request parameters, checked: each bad one is a `BadRequest` whose message starts
with the parameter's name."""

from __future__ import annotations

from ..domain.drops import decode_problem
from ..domain.errors import StudioError
from ..domain.products import FILTER_FIELDS, InvalidFilter, filter_value
from ..domain.store import MAX_TOP_K

KINDS = ("product", "campaign")
MAX_QUERY_CHARS = 300
MAX_UPLOAD_BYTES = 20_000_000  # a picture to search by


class BadRequest(StudioError):
    """A client's argument is wrong; the message starts with the parameter's name."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param


def parse_filters(params) -> dict[str, str]:
    """The catalog filters among a request's parameters (sku, category, color), checked."""
    where = {}
    for name in FILTER_FIELDS:
        raw = (params.get(name) or "").strip()
        if raw:
            try:
                where[name] = filter_value(name, raw)
            except InvalidFilter as e:
                raise BadRequest(name, str(e).split(": ", 1)[1]) from None
    return where


def parse_upload(data: bytes, max_pixels: int) -> None:
    """An uploaded picture to search by: within the size and pixel limits of drops, and an image."""
    if not data:
        raise BadRequest("image", "the request body is empty; send the image's bytes")
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadRequest("image", f"{len(data)} bytes is over the limit of {MAX_UPLOAD_BYTES} bytes")
    problem = decode_problem(data, max_pixels)
    if isinstance(problem, str):
        raise BadRequest("image", problem)


def parse_k(raw: str | None, default: int = 24) -> int:
    if raw is None or raw == "":
        return default
    try:
        k = int(raw)
    except ValueError:
        raise BadRequest("k", f"must be a whole number from 1 to {MAX_TOP_K}, got {raw!r}") from None
    if not 1 <= k <= MAX_TOP_K:
        raise BadRequest("k", f"must be from 1 to {MAX_TOP_K}, got {k}")
    return k


def parse_kind(raw: str | None) -> tuple[str, ...]:
    if raw in (None, "", "all"):
        return KINDS
    if raw not in KINDS:
        raise BadRequest("kind", f"must be all, product or campaign, got {raw!r}")
    return (raw,)


def parse_query(raw: str | None) -> str:
    query = (raw or "").strip()
    if not query:
        raise BadRequest("q", "the query is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise BadRequest("q", f"the query is {len(query)} characters long; at most {MAX_QUERY_CHARS}")
    return query


def parse_terms(words: str, not_terms, min_similarity, with_picture: bool = False, sort: str | None = None):
    """The query's words, terms to push out, floor and order (domain/query.py), or a 400 naming the parameter."""
    from ..domain.query import InvalidQuery, parse_query as terms

    try:
        return terms(words, not_terms, min_similarity, with_picture, sort)
    except InvalidQuery as e:
        field, _, message = str(e).partition(": ")
        raise BadRequest(field, message) from None


def parse_collapse(value: str | None) -> bool:
    """`collapse=false` shows every picture of a same-shot group; the default shows one."""
    if value in (None, "", "true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise BadRequest("collapse", f"must be true or false, got {value[:20]!r}")
