"""`drop-studio serve`: the search page and the JSON API it uses (Starlette, served by uvicorn).

The routes are listed in `routes` below; what each takes and answers is in docs/search-page.md.

Bad arguments are HTTP 400 with {"error": "<parameter>: <what is wrong>"}; Milvus unable to answer (a run
holding the Lite file, a server down) is 503; a revision its run could not make (over GEMINI_MAX_COST_USD,
refused by the model) is 409 with the run's one line. With DROP_STUDIO_TOKEN set, every /api/ route wants it as
`Authorization: Bearer <token>` or the cookie /api/login sets. No CORS headers are sent, so other sites'
pages cannot read the API from a visitor's browser; a POST whose Origin (or Sec-Fetch-Site) says another site
is refused, and the writes take JSON only, which a cross-site form cannot send.
"""

from __future__ import annotations

import functools
import hmac
import json
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..domain.errors import StudioError
from ..domain.reviews import current
from ..domain.settings import DEFAULTS
from .review import ReviewDesk, RevisionFailed, rendition_view, run_revision
from .connection import Busy
from .params import (MAX_UPLOAD_BYTES, BadRequest, parse_collapse, parse_filters, parse_k, parse_kind, parse_query,
                     parse_terms, parse_upload)
from .search import SearchService

if TYPE_CHECKING:  # the resources import Dagster; the page's routes need not
    from ..resources import ClipModel, MilvusResource

WEB = Path(__file__).with_name("static")
PAGES = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript"),
         "/style.css": ("style.css", "text/css")}
COOKIE = "drop_studio_token"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def thumbnail_url(kind: str, drop: str, path: str) -> str:
    return "/api/thumbnail?" + urlencode({"kind": kind, "drop": drop, "path": path})


def answered_by(model) -> dict[str, str]:
    """Which model's collections answered a search (they move to a new model in one step)."""
    return {"X-Search-Model": model.id, "X-Search-Collection": model.collection}


def _with_thumbnails(found) -> list[dict]:
    return [{**f.to_dict(), "thumbnail": thumbnail_url(f.kind, f.drop, f.path)} for f in found]


def create_app(service: SearchService, token: str | None = None,
               max_pixels: int = DEFAULTS["MAX_IMAGE_PIXELS"], desk: ReviewDesk | None = None) -> Starlette:
    desk = desk or ReviewDesk(service.artifacts_dir)

    def search(request: Request) -> JSONResponse:
        q = request.query_params
        query = parse_terms(parse_query(q.get("q")), q.getlist("not"), q.get("min_similarity"), sort=q.get("sort"))
        found, model = service.search(query, service.check_drop(q.get("drop")), parse_k(q.get("k")),
                                      parse_kind(q.get("kind")), parse_filters(q), parse_collapse(q.get("collapse")))
        return JSONResponse(_with_thumbnails(found), headers=answered_by(model))

    def by_picture(data: bytes, q) -> JSONResponse:
        parse_upload(data, max_pixels)
        words = parse_query(q.get("q")) if q.get("q") else ""
        found, model = service.search_by_picture(data, service.check_drop(q.get("drop")), parse_k(q.get("k")),
                                                 parse_kind(q.get("kind")), parse_filters(q),
                                                 parse_terms(words, q.getlist("not"), q.get("min_similarity"), True,
                                                             q.get("sort")))
        return JSONResponse(_with_thumbnails(found), headers=answered_by(model))

    def models(request: Request) -> JSONResponse:
        model = service.model()
        return JSONResponse({"model": model.id, "collection": model.collection})

    async def similar(request: Request) -> JSONResponse:
        # The encoder and Milvus block: they run in the thread pool, as Starlette runs a plain route.
        if request.method == "GET":
            return await run_in_threadpool(like_indexed, request)
        # The limit is checked while reading, so an oversized upload is never held whole.
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_UPLOAD_BYTES:
                break
        return await run_in_threadpool(by_picture, data, request.query_params)

    def like_indexed(request: Request) -> JSONResponse:
        q = request.query_params
        drop = service.check_drop(q.get("drop"), required=True)
        kind = _one_kind(q.get("kind"))
        if not q.get("path"):
            raise BadRequest("path", "missing")
        return JSONResponse(_with_thumbnails(service.similar(drop, q["path"], parse_k(q.get("k")), kind)))

    def drops(request: Request) -> JSONResponse:
        return JSONResponse(service.drops())

    def facets(request: Request) -> JSONResponse:
        return JSONResponse(service.facets())

    def drop_detail(request: Request) -> JSONResponse:
        drop = service.check_drop(request.path_params["drop"], required=True)
        detail = service.drop_detail(drop)
        for brief in detail["briefs"]:
            for ref in brief["references"]:
                ref["thumbnail"] = thumbnail_url("product", drop, ref["path"])
        history = desk.history(drop)
        standing = current(history)
        known = service.channels(drop)
        scores = service.scores(drop)
        for image in detail["campaign"]:
            image["thumbnail"] = thumbnail_url("campaign", drop, image["path"])
            last = standing.get(image["path"])
            image["review"] = last and {k: getattr(last, k) for k in ("decision", "note", "reviewer", "time")}
            image["history"] = [d.to_dict() for d in history.get(image["path"], [])]
            image["scores"] = scores.get(image["path"])
            image["renditions"] = [rendition_view(drop, image["path"], name, known.get(name), standing, history)
                                   for name in image.pop("channels")]
        dups = service.duplicates(drop)
        detail["duplicates"] = {kind: [[{"path": p, "thumbnail": thumbnail_url("product", drop, p)} for p in group]
                                       for group in dups[kind]] for kind in ("same_shot", "near_identical")} | {
                                "blank": dups["blank"]}
        detail["sheets"] = {name: "/api/sheet?" + urlencode({"drop": drop, "name": name}) for name in detail["sheets"]}
        return JSONResponse(detail)

    def rendition_preview(request: Request) -> Response:
        q = request.query_params
        drop = service.check_drop(q.get("drop"), required=True)
        if not q.get("path"):
            raise BadRequest("path", "missing")
        data = service.rendition_preview(drop, q["path"], q.get("channel", ""))
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=600"})

    def thumbnail(request: Request) -> Response:
        q = request.query_params
        drop = service.check_drop(q.get("drop"), required=True)
        if not q.get("path"):
            raise BadRequest("path", "missing")
        data = service.thumbnail(_one_kind(q.get("kind")), drop, q["path"])
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=600"})

    def sheet(request: Request) -> Response:
        q = request.query_params
        drop = service.check_drop(q.get("drop"), required=True)
        return Response(service.sheet(drop, q.get("name", "")), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=60"})

    async def json_body(request: Request) -> dict:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise BadRequest("body", "send JSON (Content-Type: application/json)")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequest("body", "not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("body", "send a JSON object")
        return body

    def body_drop(body: dict) -> str:
        return service.check_drop(body.get("drop") if isinstance(body.get("drop"), str) else None, required=True)

    async def review(request: Request) -> JSONResponse:
        body = await json_body(request)
        drop = body_drop(body)
        made = await run_in_threadpool(desk.decide, drop, body)
        return JSONResponse({"review": made.to_dict(),
                             "history": [d.to_dict() for d in desk.history(drop).get(made.subject, [])]})

    async def revise(request: Request) -> JSONResponse:
        body = await json_body(request)
        drop = body_drop(body)
        try:
            path = await run_in_threadpool(desk.revise, drop, body)
        except RevisionFailed as e:
            return JSONResponse({"error": str(e)}, status_code=409)
        service.forget(drop)  # the new image's row, counts and facts
        return JSONResponse({"path": path, "parent": body["path"], "note": body["note"].strip(),
                             "thumbnail": thumbnail_url("campaign", drop, path)})

    async def login(request: Request) -> JSONResponse:
        try:
            given = (await request.json()).get("token", "")
        except (json.JSONDecodeError, AttributeError):
            raise BadRequest("token", "send {\"token\": \"...\"} as JSON") from None
        if not token or not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"error": "token: wrong token"}, status_code=401)
        response = JSONResponse({"ok": True})
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    def page(request: Request) -> FileResponse:
        name, media_type = PAGES[request.url.path]
        return FileResponse(WEB / name, media_type=media_type)

    def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    def unavailable(request: Request, exc: StudioError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=503)

    def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    routes = [Route(path, page) for path in PAGES] + [
        Route("/api/search", search), Route("/api/model", models), Route("/api/similar", similar, methods=["GET", "POST"]),
        Route("/api/drops", drops), Route("/api/facets", facets),
        Route("/api/drops/{drop}", drop_detail), Route("/api/thumbnail", thumbnail), Route("/api/sheet", sheet),
        Route("/api/rendition", rendition_preview),
        Route("/api/login", login, methods=["POST"]), Route("/api/review", review, methods=["POST"]),
        Route("/api/revise", revise, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(_Guard, token=token)],
        exception_handlers={BadRequest: bad_request, Busy: unavailable, StudioError: unavailable,
                            HTTPException: http_error, Exception: unexpected},
    )


def _one_kind(raw: str | None) -> str:
    kinds = parse_kind(raw or "product")
    if len(kinds) != 1:
        raise BadRequest("kind", "must be product or campaign")
    return kinds[0]


def _same_origin(request: Request) -> bool:
    """A browser names the page a request comes from (Origin; else Referer; and Sec-Fetch-Site): another
    site's page may not post to this server. Scripts that send none (curl, requests) are let through, to the
    token check."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True
    here = urlsplit(str(request.url))
    there = urlsplit(origin)
    return (there.scheme, there.netloc) == (here.scheme, here.netloc)


class _Guard(BaseHTTPMiddleware):
    """The bearer token (when set) on /api/, and headers that keep the page from being framed or sniffed."""

    def __init__(self, app, token: str | None):
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next):
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and not _same_origin(request):
            return JSONResponse({"error": "origin: cross-site requests are refused"}, status_code=403)
        if self.token and request.url.path.startswith("/api/") and request.url.path != "/api/login":
            auth = request.headers.get("authorization", "")
            given = auth[len("Bearer "):] if auth.startswith("Bearer ") else request.cookies.get(COOKIE, "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return JSONResponse({"error": "token: missing or wrong (DROP_STUDIO_TOKEN)"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
        return response


# A run holding a Milvus Lite file answers a search with 503 in seconds, not after a run's wait.
SEARCH_LOCK_WAIT_S = 1


def build_service(milvus: MilvusResource, clip: "ClipModel | None" = None) -> SearchService:
    """The search every setting points at, as the rest of Drop Studio reads them; `clip` holds the weights
    (the page shares them with its revisions' runs)."""
    from ..domain.search_models import ModelEntry, SearchModels
    from ..domain.settings import setting
    from ..resources import ClipModel

    clip = clip or ClipModel()

    def serving() -> ModelEntry:
        # Before any drop is built nothing serves: CLIP_MODEL would, in MILVUS_COLLECTION.
        return SearchModels.load(setting("ARTIFACTS_DIR"), milvus.get("collection")).serving \
            or ModelEntry(clip.model_id(), clip.get("model"), clip.get("fit"), milvus.get("collection"), "")

    return SearchService(setting("DROPS_DIR"), setting("ARTIFACTS_DIR"),
                         lambda: milvus.store(SEARCH_LOCK_WAIT_S, share=True),
                         lambda: milvus.campaign_store(SEARCH_LOCK_WAIT_S, share=True),
                         clip.serving_encoder, serving)


def page_desk(service: SearchService, clip: "ClipModel") -> ReviewDesk:
    """The review desk whose revisions run with the page's CLIP weights: the run is given the page's ClipModel
    as it is (loaded, not set up again), so a revision encodes its image with the weights search holds."""
    from dagster import ResourceDefinition

    from ..resources import build_resources

    resources = {**build_resources(), "clip": ResourceDefinition.hardcoded_resource(clip)}
    return ReviewDesk(service.artifacts_dir, revise=functools.partial(run_revision, resources=resources))


def serve(host: str, port: int, say=lambda line: None) -> None:
    import uvicorn

    from ..domain.settings import setting
    from ..resources import ClipModel, MilvusResource

    token = setting("DROP_STUDIO_TOKEN")
    if host not in LOOPBACK and not token:
        raise StudioError(f"--host {host} reaches beyond this machine: set DROP_STUDIO_TOKEN first (anyone who can "
                          f"reach the port could search and view every image)")
    milvus, clip = MilvusResource(), ClipModel()
    service = build_service(milvus, clip)
    service.drop_names()  # a wrong DROPS_DIR fails here, in one line, before the server starts
    service.encoder()  # the model loads once, before the first request
    note = milvus.search_note()  # opens nothing for Milvus Lite, which always has BM25
    if note:
        say(f"drop-studio: {note}")
    say(f"Drop Studio search on http://{host}:{port}/")
    try:
        uvicorn.run(create_app(service, token, setting("MAX_IMAGE_PIXELS"), page_desk(service, clip)),
                    host=host, port=port, log_level="warning")
    finally:
        service.close()
