"""The HTTP JSON API: ``python -m imgsim serve INDEX [--host H] [--port P] [--token-file FILE]``.

FastAPI routes over :class:`~imgsim.service.operations.Service`, and five small ASGI layers around them: the
request log (method, path, status, time; never a query's image, text or vector), the allowed hosts (only without a
token: DNS rebinding), CORS (only when origins are configured), the bearer token, and the body cap (refused from
``Content-Length`` before any byte is read, and counted while reading otherwise). Every refusal is
``{"error": "one line"}`` with a 4xx status (503 with ``Retry-After`` when the model is busy too long).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Callable, Sequence
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgsim import __version__
from imgsim.errors import ImgsimError
from imgsim.service.clip_retrieval import knn_service
from imgsim.service.limits import (CLIP_RETRIEVAL_DEDUP, ApiError, Limits, base64_image, check_examples,
                                   check_listen, check_vector_length, quoted, read_token, token_matches)
from imgsim.service.operations import SearchQuery, Service, status_of

log = logging.getLogger("imgsim.service")

#: Paths served without the token: they describe the API, not the collection.
OPEN_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})
#: Form fields of a multipart search besides the image (values are short text).
FORM_FIELDS = frozenset({"k", "deduplicate", "max_distance", "where", "near"})
#: The names a server without a token answers to, besides the address it listens on and those added: a web page
#: whose DNS name was re-pointed at 127.0.0.1 (DNS rebinding) sends its own name in ``Host`` and is refused.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
#: More host names to answer to (comma-separated), as ``--allow-host`` adds them; ``*`` turns the check off.
ALLOWED_HOSTS_ENV = "IMGSIM_ALLOWED_HOSTS"
DESCRIPTION = """Nearest neighbours, near-duplicates, clusters and explanations over one imgsim index.
Paths are relative to the collection; results are what `python -m imgsim query ... --json` prints for the same
inputs. See docs/api.md."""


class SearchBody(BaseModel):
    """``POST /v1/search`` as JSON: one of text, vector, image (base64) or positive (with optional negative)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="a description (CLIP indexes)")
    vector: list[float] | None = Field(None, description="a query vector of the index's length (scaled to unit length)")
    image: str | None = Field(None, description="an image file, base64-encoded")
    positive: list[str] = Field([], description="relative paths of images the results should look like")
    negative: list[str] = Field([], description="relative paths of images they should not look like")
    k: int = Field(5, description="how many results")
    deduplicate: bool | float | None = Field(None, description="drop a result within this distance of a better one "
                                                               f"(true: {CLIP_RETRIEVAL_DEDUP}, clip-retrieval's)")
    max_distance: float | None = Field(None, description="drop results farther than this")
    where: list[str] | str = Field([], description="metadata filters, ANDed: FIELD OP VALUE, e.g. taken >= 2023-07")
    near: str | None = Field(None, description="only images taken within KM kilometres: LAT,LON,KM")

    def query(self, max_bytes: int) -> SearchQuery:
        return SearchQuery(k=self.k, text=self.text, vector=self.vector,
                           image=base64_image(self.image, max_bytes) if self.image is not None else None,
                           positive=tuple(self.positive), negative=tuple(self.negative),
                           deduplicate=_dedup(self.deduplicate), max_distance=self.max_distance,
                           where=(self.where,) if isinstance(self.where, str) else tuple(self.where), near=self.near)


def bounded_search_body(limits: Limits, dims: int) -> type[SearchBody]:
    """:class:`SearchBody` with one server's bounds in its schema: ``vector`` of the index's length at most,
    ``positive`` and ``negative`` of ``max_examples``. Longer lists are refused before their items are read, with
    the service's own messages."""
    fields = SearchBody.model_fields

    class Bounded(SearchBody):
        model_config = ConfigDict(extra="forbid", title="SearchBody")

        vector: list[float] | None = Field(None, max_length=dims, description=fields["vector"].description)
        positive: list[str] = Field([], max_length=limits.max_examples, description=fields["positive"].description)
        negative: list[str] = Field([], max_length=limits.max_examples, description=fields["negative"].description)

        @field_validator("vector", mode="before")
        @classmethod
        def _not_longer(cls, value: object) -> object:
            if isinstance(value, list) and len(value) > dims:  # shorter ones: their items are checked first
                check_vector_length(value, dims)
            return value

        @field_validator("positive", "negative", mode="before")
        @classmethod
        def _few(cls, value: object) -> object:
            if isinstance(value, list):
                check_examples(len(value), limits)
            return value

    return Bounded


def _dedup(value: bool | float | None) -> float | None:
    if value is True:
        return CLIP_RETRIEVAL_DEDUP
    return None if value is False or value is None else float(value)


def validation_message(errors: Sequence[dict]) -> str:
    """Pydantic's first complaint as one line: ``field: what is wrong``."""
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    where = ".".join(str(p) for p in (loc[1:] if loc[:1] in (("body",), ("query",), ("path",)) else loc))
    if first.get("type") == "extra_forbidden":
        return f"Unknown field {where!r}."
    return f"{where or 'request'}: {first.get('msg', 'invalid')}."


def parse_json(body: bytes) -> object:
    """A request body as JSON, or a 400 that says where it breaks."""
    if not body.strip():
        raise ApiError(400, "The body is empty: send a JSON object.")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise ApiError(400, f"The body is not valid JSON{where}.") from None


def parse_multipart(body: bytes, content_type: str, max_parts: int = 8) -> dict[str, bytes]:
    """The parts of a ``multipart/form-data`` body, by field name, kept in memory (never spooled to disk)."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError(400, "The multipart body has no boundary.")
    parts: dict[str, bytes] = {}
    current: dict = {}

    def header_field(data: bytes, start: int, end: int) -> None:
        current["field"] = current.get("field", b"") + data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        current["value"] = current.get("value", b"") + data[start:end]

    def header_end() -> None:
        if current.pop("field", b"").lower() == b"content-disposition":
            current["name"] = parse_options_header(current.get("value", b""))[1].get(b"name", b"").decode("utf-8", "replace")
        current.pop("value", None)

    def part_begin() -> None:
        current.clear()
        current["data"] = []

    def part_data(data: bytes, start: int, end: int) -> None:
        current["data"].append(data[start:end])

    def part_end() -> None:
        name = current.get("name") or ""
        if name in parts:
            raise ApiError(400, f"The form field {name!r} appears twice.")
        if len(parts) >= max_parts:
            raise ApiError(400, "Too many form fields.")
        parts[name] = b"".join(current["data"])

    parser = MultipartParser(boundary, {"on_part_begin": part_begin, "on_part_data": part_data,
                                        "on_part_end": part_end, "on_header_field": header_field,
                                        "on_header_value": header_value, "on_header_end": header_end})
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError:
        raise ApiError(400, "The multipart body is malformed.") from None
    return parts


def form_query(parts: dict[str, bytes]) -> SearchQuery:
    """A multipart search: the image in the field ``image``; ``k``, ``deduplicate``, ``max_distance``, ``where``
    (one clause) and ``near`` as text."""
    image = parts.pop("image", None)
    if image is None:
        raise ApiError(400, "A multipart search sends the image in the form field 'image'.")
    unknown = sorted(set(parts) - FORM_FIELDS)
    if unknown:
        raise ApiError(400, f"Unknown form field {unknown[0]!r}: besides 'image' a form may send "
                            f"{', '.join(sorted(FORM_FIELDS))}.")

    def number(name: str, kind: Callable = float):
        if name not in parts:
            return None
        text = parts[name].decode("utf-8", "replace").strip()
        if name == "deduplicate" and text.lower() in ("true", "false"):
            return _dedup(text.lower() == "true")
        try:
            return kind(text)
        except ValueError:
            raise ApiError(400, f"{name} must be a number (got {text[:40]!r}).") from None

    k = number("k", int)
    where, near = (parts[name].decode("utf-8", "replace") if name in parts else None for name in ("where", "near"))
    return SearchQuery(k=5 if k is None else k, image=image, deduplicate=number("deduplicate"),
                       max_distance=number("max_distance"), where=(where,) if where else (), near=near)


# --- ASGI layers -------------------------------------------------------------------------------------------

async def _send_error(send: Send, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse bodies over ``max_bytes``: from ``Content-Length`` before reading, else while they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = f"The request body is larger than {self.max_bytes // 2**20} MiB."
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _send_error(send, 413, too_large)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise ApiError(413, too_large)
            return message

        await self.app(scope, counted, send)


class BearerToken:
    """Every request but the API description needs ``Authorization: Bearer TOKEN``."""

    def __init__(self, app: ASGIApp, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        if not token_matches(header, self.token):
            message = ("This server needs a token: send 'Authorization: Bearer TOKEN'." if not header else
                       "The token is not valid for this server.")
            return await _send_error(send, 401, message, [(b"www-authenticate", b"Bearer")])
        await self.app(scope, receive, send)


def host_name(header: str) -> str | None:
    """The name in a ``Host`` header, lower-case, without port or IPv6 brackets; None when it is not one."""
    try:
        return urlsplit("//" + header).hostname if header and "/" not in header else None
    except ValueError:
        return None


class TrustedHosts:
    """Only requests whose ``Host`` names this server (Starlette's TrustedHostMiddleware rule: exact names, ``*``
    for any), refused with the API's one-line JSON. Without a token this is what stops DNS rebinding."""

    def __init__(self, app: ASGIApp, hosts: Sequence[str]):
        self.app = app
        self.hosts = frozenset(h.strip().lower().strip("[]") for h in hosts if h.strip())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "*" in self.hosts:
            return await self.app(scope, receive, send)
        name = host_name(dict(scope["headers"]).get(b"host", b"").decode("latin-1"))
        if name not in self.hosts:
            return await _send_error(send, 400, f"This server does not answer to the host {quoted(name or '')}: "
                                                f"without a token it answers to {', '.join(sorted(self.hosts))} "
                                                f"(add names with --allow-host or {ALLOWED_HOSTS_ENV}).")
        await self.app(scope, receive, send)


class RequestLog:
    """One line per request: method, path, status, milliseconds, body bytes. Never a query string or a body."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, received = time.perf_counter(), [500], [0]

        async def counting() -> Message:
            message = await receive()
            received[0] += len(message.get("body", b""))
            return message

        async def watching(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, counting, watching)
        finally:
            log.info("%s %s %d %.1f ms %d B", scope["method"], scope["path"][:200], status[0],
                     1000 * (time.perf_counter() - start), received[0])


# --- the application ---------------------------------------------------------------------------------------

def make_app(service: Service, token: str | None = None, cors_origins: Sequence[str] = (),
             allowed_hosts: Sequence[str] = LOOPBACK_HOSTS) -> FastAPI:
    """The API over one service; ``token`` guards it, ``cors_origins`` lets those browser origins call it, and
    without a token only requests to ``allowed_hosts`` are answered."""
    limits = service.limits
    body_model = bounded_search_body(limits, service.collection.index.dims)
    app = FastAPI(title="imgsim", version=__version__, description=DESCRIPTION, redoc_url=None)
    app.state.service = service

    @app.exception_handler(ImgsimError)
    async def refused(_: Request, exc: ImgsimError) -> JSONResponse:
        retry = getattr(exc, "retry_after", None)
        return JSONResponse({"error": service.message(exc)}, status_code=status_of(exc),
                            headers={"Retry-After": str(retry)} if retry else None)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": validation_message(exc.errors())}, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": f"{exc.detail}."}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this answer, so the traceback reaches the server log, never the caller.
        return JSONResponse({"error": "Internal error: the server log has the details."}, status_code=500)

    @app.get("/v1/info", summary="What the index holds, its capabilities and the limits of this server")
    def info() -> dict:
        return service.info()

    @app.get("/v1/similar", summary="The nearest neighbours of an indexed image (itself first)")
    def similar(path: str = Query(..., description="relative path, as in results"),
                k: int = Query(5, ge=1, le=limits.max_k),
                deduplicate: float | None = Query(None, ge=0, le=2),
                max_distance: float | None = Query(None, ge=0, le=2),
                where: list[str] = Query([], description="metadata filters, ANDed: FIELD OP VALUE (repeatable)"),
                near: str | None = Query(None, description="LAT,LON,KM")) -> dict:
        return service.similar(path, k, deduplicate, max_distance, where, near)

    search_body = {"required": True, "content": {
        "application/json": {"schema": body_model.model_json_schema()},
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary"}, "k": {"type": "integer"},
            "deduplicate": {"type": "number"}, "max_distance": {"type": "number"}, "where": {"type": "string"},
            "near": {"type": "string"}}}}}}

    @app.post("/v1/search", summary="Search by text, vector, uploaded image, or more like these",
              openapi_extra={"requestBody": search_body})
    async def search(request: Request) -> dict:
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        if content_type.lower().startswith("multipart/form-data"):
            query = form_query(parse_multipart(body, content_type))
        else:  # JSON whatever the declared type: curl -d and ClipClient-style callers do not always say
            data = parse_json(body)
            if not isinstance(data, dict):
                raise ApiError(400, "The body must be a JSON object, e.g. {\"positive\": [\"a.jpg\"], \"k\": 5}.")
            try:
                query = body_model.model_validate(data).query(limits.max_body_bytes)
            except ValidationError as exc:
                raise ApiError(400, validation_message(exc.errors())) from None
        return await run_in_threadpool(service.search, query)

    @app.get("/v1/images/{path:path}/thumbnail", summary="A JPEG thumbnail of an indexed image",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def thumbnail(path: str, size: int = Query(limits.thumbnail_default, ge=limits.thumbnail_min,
                                               le=limits.thumbnail_max)) -> Response:
        return Response(service.thumbnail(path, size), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=300"})

    @app.get("/v1/duplicates", summary="Groups of near-duplicate images")
    def duplicates(threshold: float = Query(..., ge=0, le=limits.max_threshold, description=(
                       f"largest distance in a pair; the scan stops after {limits.max_pairs:,} pairs and then says "
                       "'truncated'"))) -> dict:
        return service.duplicates(threshold)

    @app.get("/v1/clusters", summary="The collection grouped into k albums (k-means)")
    def clusters(k: int | None = Query(None, ge=1, le=limits.max_clusters,
                                       description="default: the suggested k"),
                 central: int = Query(5, ge=1, le=limits.max_central)) -> dict:
        return service.clusters(k, central)

    @app.get("/v1/explain", summary="Why two indexed images are similar, cell by cell of the 7x7 grid")
    def explain(a: str = Query(..., description="relative path"), b: str = Query(..., description="relative path")
                ) -> dict:
        return service.explain(a, b)

    @app.post("/knn-service", summary="clip-retrieval's search, for ClipClient")
    async def knn(request: Request) -> list:
        payload = parse_json(await request.body())
        base = str(request.base_url).rstrip("/")
        return await run_in_threadpool(knn_service, service, payload,
                                       lambda p: f"{base}/v1/images/{quote(p)}/thumbnail")

    @app.get("/indices-list", summary="clip-retrieval's list of indices: this server's one")
    def indices_list() -> list:
        return [service.name]

    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if token is not None:
        app.add_middleware(BearerToken, token=token)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    if token is None:  # with a token, a rebinding page has no token to send
        app.add_middleware(TrustedHosts, hosts=allowed_hosts)
    app.add_middleware(RequestLog)
    return app


def server_hosts(host: str, allowed_hosts: Sequence[str] = ()) -> list[str]:
    """The ``Host`` names a server without a token answers to: loopback names, the address it listens on,
    ``allowed_hosts`` (``--allow-host``) and the comma-separated ``IMGSIM_ALLOWED_HOSTS``."""
    extra = os.environ.get(ALLOWED_HOSTS_ENV, "").split(",")
    return list(dict.fromkeys(h.strip() for h in (*LOOPBACK_HOSTS, host, *allowed_hosts, *extra) if h.strip()))


def serve(index_dir: str, host: str = "127.0.0.1", port: int = 8600, token_file: str | None = None,
          insecure_no_token: bool = False, cors_origins: Sequence[str] = (), allowed_hosts: Sequence[str] = ()) -> int:
    """Run the API until interrupted (refused up front on a non-loopback address without a token); without a
    token it answers to loopback names, ``host``, ``allowed_hosts`` and those of ``IMGSIM_ALLOWED_HOSTS``."""
    import uvicorn

    token = read_token(token_file) if token_file else None
    check_listen(host, token is not None, insecure_no_token)
    hosts = server_hosts(host, allowed_hosts)
    service = Service.open(index_dir)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    answers = "token required" if token else f"no token; answers to Host {', '.join(hosts)}"
    print(f"imgsim API: {service.collection.count:,} images of {service.name} on http://{host}:{port}/v1/ "
          f"({answers}; OpenAPI page /docs)", file=sys.stderr)
    config = uvicorn.Config(make_app(service, token, cors_origins, hosts), host=host, port=port, access_log=False,
                            server_header=False, limit_concurrency=256, timeout_keep_alive=5, log_level="warning")
    uvicorn.Server(config).run()
    return 0
