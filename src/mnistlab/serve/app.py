"""FastAPI app: a page to draw a digit on, and a JSON API that recognizes digits.

    POST /api/predict   multipart file upload (PNG/JPEG), a raw image/* body, or
                        JSON {"pixels": 28x28 or 784 values in 0..255, "preprocess": false};
                        optional profile (a form field, JSON field or ?profile=NAME):
                        read with what that person taught (default "default")
    POST /api/teach     the same inputs plus label (0..9; form field, JSON field or
                        ?label=D): store the 28x28 image the model saw under the profile
                        (created if new) and answer how it reads now, plus "taught"
    GET  /api/health    liveness and the model in use (HEAD too, like every GET)
    GET  /docs          OpenAPI documentation

Profiles live in one SQLite file (``--db``; ``$MNISTLAB_HOME/profiles.sqlite`` by
default), made by the first teach; see ``mnistlab.handwriting.profiles``. "default"
always exists (empty until taught, it reads exactly as the model); another name answers
404 until it has been taught; 409 when the database holds the most profiles allowed.

Every bad request gets a 4xx JSON error ``{"detail": "..."}`` naming the problem; an
unexpected failure is a JSON 500. Memory and time are bounded whatever clients send
(see ``mnistlab.serve.limits``): bodies are capped, spooled to disk and read against a
deadline; image decodes are admitted against one memory budget.

One module, though long: the routes and the request-body reading they depend on are one
HTTP surface; the limits themselves live in ``serve/limits.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any, BinaryIO

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import PngImagePlugin
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartParser
from starlette.requests import ClientDisconnect

from mnistlab import __version__
from mnistlab.errors import ImageError
from mnistlab.handwriting.adapt import PersonalRecognizer
from mnistlab.handwriting.preprocess import (
    WORK_MAX_SIDE,
    decode_cost,
    decode_opened,
    open_image,
    preprocess_image,
)
from mnistlab.handwriting.profiles import (
    DEFAULT_PROFILE,
    ProfileError,
    ProfileLimitError,
    ProfileStore,
    UnknownProfileError,
    check_label,
    check_name,
)
from mnistlab.handwriting.recognizer import Prediction, Recognizer, parse_pixel_array
from mnistlab.serve import limits
from mnistlab.serve.limits import (
    BODY_GRACE_S,
    BODY_MIN_RATE,
    DECODE_BUDGET_BYTES,
    DRAIN_BYTES,
    HEADER_TIMEOUT_S,
    IMAGE_OVERHEAD_BYTES,
    KEEP_ALIVE_S,
    MAX_BODY_BYTES,
    MAX_CONNECTIONS,
    MAX_JSON_BYTES,
    OPEN_BYTES,
    PNG_TEXT_BYTES,
    PREPROCESS_BYTES_PER_PIXEL,
    SPOOL_BYTES,
    DecodeBudget,
)

__all__ = ["MAX_BODY_BYTES", "MAX_JSON_BYTES", "create_app", "run_server"]

IMAGE_FORMATS = ("PNG", "JPEG")
"""What the API decodes: what canvases (PNG) and phones and cameras (JPEG) send."""

_PROFILE_DOC = {
    "type": "string",
    "default": DEFAULT_PROFILE,
    "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    "description": "whose taught examples to read with; another name than 'default' must "
    "have been taught first (404 otherwise)",
}
_LABEL_DOC = {"type": "integer", "minimum": 0, "maximum": 9, "description": "the true digit"}


def _body_doc(*, teach: bool) -> dict[str, Any]:
    """The OpenAPI text of /api/predict's (``teach``: /api/teach's) body and query."""
    fields = {"profile": _PROFILE_DOC, **({"label": _LABEL_DOC} if teach else {})}
    query = [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            "description": "the same as the body field (for raw image bodies)",
        }
        for name, schema in fields.items()
    ]
    return {
        "parameters": query,
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}, **fields},
                        "required": ["file"],
                    }
                },
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "pixels": {
                                "description": "28x28 nested list or 784 numbers, 0..255, "
                                "white digit on black",
                                "type": "array",
                            },
                            "preprocess": {"type": "boolean", "default": False},
                            **fields,
                        },
                        "required": ["pixels"],
                    }
                },
            },
        },
    }


PREDICT_BODY_DOC: dict[str, Any] = _body_doc(teach=False)
TEACH_BODY_DOC: dict[str, Any] = _body_doc(teach=True)
"""/api/teach's body: predict's inputs plus a label (required, unless given as ?label=)."""


# ------------------------------------------------------------------------ middleware


class _BodyTooLarge(Exception):
    pass


class _BodyTimeout(Exception):
    pass


_CLOSE = (b"connection", b"close")


class BodyLimitMiddleware:
    """Bound every request body in size (413) and in time (408), as it streams in.

    A body over ``limit`` is read and discarded up to ``DRAIN_BYTES`` before the 413 is
    sent, so clients that write the whole body before reading the answer get it instead
    of a reset; a client that asked ``Expect: 100-continue`` has sent nothing yet and gets
    the 413 at once. The body must arrive within ``grace_s`` plus its length (declared,
    else the limit) at ``min_rate`` bytes a second.
    """

    def __init__(
        self,
        app: Any,
        limit: int,
        grace_s: float = BODY_GRACE_S,
        min_rate: float = BODY_MIN_RATE,
    ) -> None:
        self.app = app
        self.limit = limit
        self.grace_s = grace_s
        self.min_rate = min_rate

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared_text = headers.get(b"content-length", b"")
        declared = int(declared_text) if declared_text.isdigit() else None
        expects_continue = headers.get(b"expect", b"").lower() == b"100-continue"
        expected = declared if declared is not None else self.limit
        deadline = time.monotonic() + self.grace_s + min(expected, self.limit) / self.min_rate
        if declared is not None and declared > self.limit:
            if not expects_continue and declared <= DRAIN_BYTES:
                await self._drain(receive, 0, deadline)
            await self._error(
                send,
                413,
                f"request body is larger than {self.limit:,} bytes",
                close=expects_continue or declared > DRAIN_BYTES,
            )
            return
        received = 0
        finished = False

        async def limited_receive() -> dict:
            nonlocal received, finished
            if finished:  # the body is in; what follows is a wait for the disconnect
                return await receive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _BodyTimeout
            try:
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                raise _BodyTimeout from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                finished = not message.get("more_body", False)
                if received > self.limit:
                    raise _BodyTooLarge
            return message

        async def send_after_body(message: dict) -> None:
            nonlocal finished
            if message["type"] == "http.response.start" and not finished:
                # Answering early (415, a JSON body over its limit, ...): read the rest
                # first, or a client still writing it gets a reset instead of the answer.
                finished = await self._drain(receive, received, deadline)
                if not finished:
                    message = {**message, "headers": [*message.get("headers", []), _CLOSE]}
            await send(message)

        try:
            await self.app(scope, limited_receive, send_after_body)
        except _BodyTooLarge:
            drained = await self._drain(receive, received, deadline)
            await self._error(
                send, 413, f"request body is larger than {self.limit:,} bytes", close=not drained
            )
        except _BodyTimeout:
            await self._error(
                send,
                408,
                f"request body did not arrive in time ({received:,} bytes by the deadline "
                f"of {self.grace_s:g} s + {self.min_rate / 1024:g} KiB/s)",
                close=True,
            )
        except ClientDisconnect:
            return  # nobody to answer

    async def _drain(self, receive: Any, received: int, deadline: float) -> bool:
        """Read and discard the rest of a body, up to DRAIN_BYTES in all and the deadline;
        True when it was all read (the connection can then be kept)."""
        while received <= DRAIN_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                return False
            if message["type"] != "http.request":
                return False
            received += len(message.get("body", b""))
            if not message.get("more_body", False):
                return True
        return False

    @staticmethod
    async def _error(send: Any, status: int, detail: str, *, close: bool) -> None:
        headers = {"connection": "close"} if close else None
        response = JSONResponse({"detail": detail}, status_code=status, headers=headers)
        await response({"type": "http"}, None, send)


class HeadAsGetMiddleware:
    """Answer HEAD like GET without the body (RFC 9110: every GET resource has HEAD);
    the server keeps the real method, so it sends no body and keeps Content-Length."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: dict) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)


# ----------------------------------------------------------------------------- the app


def create_app(
    model_path: str | os.PathLike[str] | None = None,
    *,
    profiles_db: str | os.PathLike[str] | None = None,
    decode_budget_bytes: int = DECODE_BUDGET_BYTES,
    decode_slots: int | None = None,
    body_grace_s: float = BODY_GRACE_S,
    body_min_rate: float = BODY_MIN_RATE,
) -> FastAPI:
    """Build the app around one model (the bundled one by default) and one profiles
    database (``profiles_db``; ``$MNISTLAB_HOME/profiles.sqlite`` by default), which is
    only created when someone first teaches."""
    PngImagePlugin.MAX_TEXT_MEMORY = min(PngImagePlugin.MAX_TEXT_MEMORY, PNG_TEXT_BYTES)
    recognizer = Recognizer.from_path(model_path)
    personal = PersonalRecognizer(recognizer, ProfileStore(profiles_db, create=False))
    budget = DecodeBudget(decode_budget_bytes, decode_slots or limits.decode_slots())
    app = FastAPI(
        title="mnistlab",
        version=__version__,
        description="Recognize handwritten digits: draw one at / or POST to /api/predict; "
        "correct a misread one with POST /api/teach.",
    )
    app.state.decode_budget = budget
    app.state.personal = personal
    app.add_middleware(
        BodyLimitMiddleware, limit=MAX_BODY_BYTES, grace_s=body_grace_s, min_rate=body_min_rate
    )
    app.add_middleware(HeadAsGetMiddleware)
    page = (resources.files("mnistlab.serve") / "static" / "index.html").read_text("utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        """Liveness, and which model answers."""
        return {"status": "ok", "model": recognizer.name, "version": __version__}

    @app.post("/api/predict", openapi_extra=PREDICT_BODY_DOC)
    async def predict(request: Request) -> dict[str, Any]:
        """Recognize one digit, read with a profile ("default" unless given); answers the
        digit, its ten probabilities, the 28x28 input and the profile. 404 for a profile
        never taught."""
        async with _request_input(request) as given:
            profile = _profile_field(request, given.fields)
            await run_in_threadpool(_check_known, personal, profile)  # before decoding
            pixels = await given.pixels(budget)
        prediction = await run_in_threadpool(personal.recognize_pixels, pixels, profile)
        return {**prediction.to_json(top_k=3), "profile": profile}

    @app.post("/api/teach", openapi_extra=TEACH_BODY_DOC)
    async def teach(request: Request) -> dict[str, Any]:
        """Teach one digit: the input (as for /api/predict) is preprocessed, and the 28x28
        image the model saw is stored with ``label`` under the profile (created if new).
        Answers how it reads now, plus ``taught``: profile, label, examples it now holds."""
        async with _request_input(request) as given:
            profile = _profile_field(request, given.fields)
            label = _label_field(request, given.fields)
            pixels = await given.pixels(budget)
        prediction, examples = await run_in_threadpool(_teach_one, personal, pixels, label, profile)
        taught = {"profile": profile, "label": label, "examples": examples}
        return {**prediction.to_json(top_k=3), "profile": profile, "taught": taught}

    @app.exception_handler(ImageError)
    async def image_error(_: Request, error: ImageError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(UnknownProfileError)
    async def unknown_profile(_: Request, error: UnknownProfileError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404)  # forgotten meanwhile

    @app.exception_handler(ProfileLimitError)
    async def too_many_profiles(_: Request, error: ProfileLimitError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.exception_handler(ProfileError)
    async def profile_database_error(_: Request, error: ProfileError) -> JSONResponse:
        # Names and labels are checked in the routes (422): what is left is the server's
        # database (unreadable, not a profile database, locked past the busy timeout).
        return JSONResponse({"detail": str(error)}, status_code=500)

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, error: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": f"internal server error ({type(error).__name__})"}, status_code=500
        )

    return app


# ----------------------------------------------------------------- request inputs


class _Input:
    """What a predict or teach request carries: its other fields (form fields or JSON
    keys, each a list of the values given) and the digit, not yet decoded."""

    def __init__(
        self,
        fields: dict[str, list[Any]],
        *,
        upload: BinaryIO | None = None,
        name: str = "upload",
        pixels: np.ndarray | None = None,
        preprocess: bool = False,
    ) -> None:
        self.fields = fields
        self._upload = upload
        self._name = name
        self._pixels = pixels
        self._preprocess = preprocess

    async def pixels(self, budget: DecodeBudget) -> np.ndarray:
        """The 28x28 MNIST-form image the model reads: an upload decoded and preprocessed
        under the decode budget, JSON pixels preprocessed only when asked."""
        if self._upload is not None:
            return await _upload_pixels(budget, self._upload, self._name)
        assert self._pixels is not None
        if self._preprocess:
            return await run_in_threadpool(preprocess_image, self._pixels, name="pixels")
        return self._pixels


@contextlib.asynccontextmanager
async def _request_input(request: Request) -> AsyncIterator[_Input]:
    """Read a request body by its content type (multipart with a 'file' field, a raw
    image, or JSON pixels); what is spooled is closed on leaving."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await _parse_multipart(request)
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise HTTPException(422, "multipart body needs a 'file' field holding the image")
            fields: dict[str, list[Any]] = {}
            for key, value in form.multi_items():
                if key != "file":
                    fields.setdefault(key, []).append(value)
            yield _Input(fields, upload=upload.file, name=upload.filename or "upload")
        finally:
            await form.close()
    elif content_type.startswith("image/"):
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as body:
            async for chunk in request.stream():
                body.write(chunk)
            yield _Input({}, upload=body, name="body")
    elif content_type == "application/json":
        payload = _json_object(await _read_json_body(request))
        pixels, preprocess = _pixels_from_json(payload)
        fields = {key: [value] for key, value in payload.items()}
        yield _Input(fields, pixels=pixels, preprocess=preprocess)
    else:
        raise HTTPException(
            415,
            f"unsupported content type {content_type or '(none)'!r}: send multipart/form-data "
            "with a 'file' field, an image/png or image/jpeg body, or JSON {\"pixels\": ...}",
        )


_MISSING = object()


def _field(request: Request, fields: dict[str, list[Any]], key: str) -> Any:
    """The one value of ``key``, from the body's fields or the query string (both may
    carry it if they agree); ``_MISSING`` when neither does."""
    values = [*fields.get(key, []), *request.query_params.getlist(key)]
    if not values:
        return _MISSING
    if any(value != values[0] or type(value) is not type(values[0]) for value in values[1:]):
        raise HTTPException(422, f"{key}: given {len(values)} times with different values")
    return values[0]


def _profile_field(request: Request, fields: dict[str, list[Any]]) -> str:
    """The request's valid profile name ("default" when none is given), else a 422."""
    value = _field(request, fields, "profile")
    if value is _MISSING:
        return DEFAULT_PROFILE
    try:
        return check_name(value)
    except ProfileError as error:
        raise HTTPException(422, str(error)) from None


def _label_field(request: Request, fields: dict[str, list[Any]]) -> int:
    """The request's label, a digit 0..9, else a 422 saying what is allowed."""
    value = _field(request, fields, "label")
    if value is _MISSING:
        raise HTTPException(
            422, "label: missing; send the true digit 0..9 as a form field, JSON field or ?label="
        )
    try:
        return check_label(value)
    except ProfileError as error:
        raise HTTPException(422, str(error)) from None


def _check_known(personal: PersonalRecognizer, profile: str) -> None:
    """A 404 for a profile that cannot be read with (any but "default", never taught)."""
    try:
        personal.memory(profile)
    except UnknownProfileError:
        raise HTTPException(
            404,
            f"profile {profile!r} has not been taught yet: teach it a digit first "
            "(POST /api/teach), or leave the profile out for the default one",
        ) from None


def _teach_one(
    personal: PersonalRecognizer, pixels: np.ndarray, label: int, profile: str
) -> tuple[Prediction, int]:
    """Store one example; its reading now, and how many examples the profile holds."""
    [prediction] = personal.teach(pixels[None], [label], profile)
    return prediction, personal.store.info(profile).examples


class _SmallSpoolParser(MultiPartParser):
    spool_max_size = SPOOL_BYTES  # uploaded files go to disk past this, not 1 MiB each


async def _parse_multipart(request: Request) -> Any:
    parser = _SmallSpoolParser(
        request.headers, request.stream(), max_files=1, max_fields=10, max_part_size=SPOOL_BYTES
    )
    try:
        return await parser.parse()
    except (_BodyTooLarge, _BodyTimeout, ClientDisconnect):
        raise  # the body limits answer these (413, 408), not "malformed"
    except Exception as error:  # malformed multipart bodies raise several types
        raise HTTPException(400, f"malformed multipart body: {error}") from error


async def _upload_pixels(budget: DecodeBudget, data: BinaryIO, name: str) -> np.ndarray:
    """Read the image's header to learn what decoding it costs, then, once the budget has
    room for that, decode and preprocess it in a worker thread (to the 28x28 image the
    model reads, a few hundred bytes, so recognizing and teaching hold no budget). The
    header is read again for the decode: what Pillow keeps of it (JPEG APP segments: up to
    the whole file) is not held by requests waiting in line."""
    async with budget.hold(OPEN_BYTES):
        cost = await run_in_threadpool(_decode_cost, data, name, budget.total_bytes)
    async with budget.hold(cost):
        return await run_in_threadpool(_decode_and_preprocess, data, name)


def _decode_cost(data: BinaryIO, name: str, allowed: int) -> int:
    """Bytes decoding and preprocessing this upload will need at most (see limits)."""
    with open_image(data, name=name, formats=IMAGE_FORMATS) as image:
        width, height = image.size
        cost = decode_cost(image, max_side=WORK_MAX_SIDE)
        what = f"{width}x{height} {image.format}"
    shrink = min(1.0, WORK_MAX_SIDE / max(width, height))
    work_pixels = max(1, round(width * shrink)) * max(1, round(height * shrink))
    held = data.seek(0, os.SEEK_END)  # the header data Pillow keeps is at most the file
    cost += held + work_pixels * PREPROCESS_BYTES_PER_PIXEL + IMAGE_OVERHEAD_BYTES
    if cost > allowed:
        raise ImageError(
            f"{name}: decoding this {what} image would take about {cost / 2**20:.0f} MiB, "
            f"more than the {allowed / 2**20:.0f} MiB this server allows one image "
            "(progressive or CMYK JPEGs cost the most); send a smaller or baseline JPEG"
        )
    return cost


def _decode_and_preprocess(data: BinaryIO, name: str) -> np.ndarray:
    image = open_image(data, name=name, formats=IMAGE_FORMATS)
    decoded = decode_opened(image, name=name, max_side=WORK_MAX_SIDE)
    return preprocess_image(decoded, name=name)


async def _read_json_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise HTTPException(
                413,
                f"JSON body is larger than {MAX_JSON_BYTES:,} bytes (784 pixel values need "
                "well under 32 KiB)",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise HTTPException(400, f"malformed JSON: {error}") from error
    except RecursionError:
        raise HTTPException(400, "malformed JSON: nested too deeply") from None
    if not isinstance(payload, dict) or "pixels" not in payload:
        raise HTTPException(422, "JSON body must be an object with a 'pixels' field")
    return payload


def _pixels_from_json(payload: dict[str, Any]) -> tuple[np.ndarray, bool]:
    preprocess = payload.get("preprocess", False)
    if not isinstance(preprocess, bool):
        raise HTTPException(422, "'preprocess' must be true or false")
    return parse_pixel_array(payload["pixels"]), preprocess


# ---------------------------------------------------------------------------- serving


def run_server(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    header_timeout_s: float = HEADER_TIMEOUT_S,
    keep_alive_s: float = KEEP_ALIVE_S,
) -> None:
    """Serve ``app`` with uvicorn under the limits above: idle keep-alive connections
    closed after ``keep_alive_s``, a connection that does not complete a request's
    headers within ``header_timeout_s`` closed, at most ``MAX_CONNECTIONS`` at once."""
    import uvicorn

    _return_big_blocks_at_once()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        http=_protocol_with_header_deadline(header_timeout_s),
        timeout_keep_alive=keep_alive_s,  # type: ignore[arg-type]  # a float works
        limit_concurrency=MAX_CONNECTIONS,
        h11_max_incomplete_event_size=16 * 1024,  # request line + headers
    )
    uvicorn.Server(config).run()


def _return_big_blocks_at_once() -> None:
    """Make glibc serve every allocation of 4 MiB or more with its own mmap, returned to
    the system on free. By default glibc raises that threshold to 32 MiB after the first
    big free, so decode buffers land in per-thread arenas that keep their pages: measured
    on 32 worst-case uploads with 16 decode slots, a 400-600 MiB peak instead of 280."""
    import ctypes
    import ctypes.util

    m_mmap_threshold = -3
    with contextlib.suppress(Exception):  # not glibc (musl, macOS): nothing to tune
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(m_mmap_threshold, 4 * 1024 * 1024)


def _protocol_with_header_deadline(timeout_s: float) -> type:
    """uvicorn's h11 protocol, plus a deadline for each request's headers (uvicorn has
    none: a connection that sends half a request line was held open forever)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineProtocol(H11Protocol):
        _deadline_timer: asyncio.TimerHandle | None = None
        _cycle_at_arming: Any = None

        def _arm(self) -> None:
            self._disarm()
            self._cycle_at_arming = self.cycle
            self._deadline_timer = self.loop.call_later(timeout_s, self._deadline_passed)

        def _disarm(self) -> None:
            if self._deadline_timer is not None:
                self._deadline_timer.cancel()
                self._deadline_timer = None

        def _deadline_passed(self) -> None:
            self._deadline_timer = None
            if self.cycle is self._cycle_at_arming and not self.transport.is_closing():
                self.transport.close()  # no request started since the timer was set

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self._deadline_timer is not None and self.cycle is not self._cycle_at_arming:
                self._disarm()  # a request's headers are in

        def on_response_complete(self) -> None:
            if not self.transport.is_closing():
                self._arm()
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol
