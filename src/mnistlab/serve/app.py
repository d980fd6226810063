"""FastAPI app: a page to draw a digit on, and a JSON API that recognizes digits.

    POST /api/predict   multipart file upload (PNG/JPEG), a raw image/* body, or
                        JSON {"pixels": 28x28 or 784 values in 0..255, "preprocess": false}
    GET  /api/health    liveness and the model in use
    GET  /docs          OpenAPI documentation

Every bad request gets a 4xx JSON error ``{"detail": "..."}`` naming the problem.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import UploadFile

from mnistlab import __version__
from mnistlab.errors import ImageError
from mnistlab.handwriting.preprocess import decode_image
from mnistlab.handwriting.recognizer import Recognizer, parse_pixel_array

MAX_BODY_BYTES = 8 * 1024 * 1024
"""Largest request body accepted (8 MiB); larger ones get 413 before being read whole."""

PREDICT_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
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
                            "description": "28x28 nested list or 784 values, 0..255, "
                            "white digit on black",
                            "type": "array",
                        },
                        "preprocess": {"type": "boolean", "default": False},
                    },
                    "required": ["pixels"],
                }
            },
        },
    }
}


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes with 413, counting as they stream in."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(send)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._too_large(send)

    async def _too_large(self, send: Any) -> None:
        response = JSONResponse(
            {"detail": f"request body is larger than {self.limit:,} bytes"}, status_code=413
        )
        await response({"type": "http"}, None, send)


class _BodyTooLarge(Exception):
    pass


def create_app(model_path: str | os.PathLike[str] | None = None) -> FastAPI:
    """Build the app around one model (the bundled one by default)."""
    recognizer = Recognizer.from_path(model_path)
    app = FastAPI(
        title="mnistlab",
        version=__version__,
        description="Recognize handwritten digits: draw one at / or POST to /api/predict.",
    )
    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES)
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
        """Recognize one digit; answers the digit, its ten probabilities and the 28x28 input."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            data, name = await _uploaded_file(request)
            prediction = await run_in_threadpool(_from_image_bytes, recognizer, data, name)
        elif content_type.startswith("image/"):
            data = await request.body()
            prediction = await run_in_threadpool(_from_image_bytes, recognizer, data, "body")
        elif content_type == "application/json":
            pixels, preprocess = _pixels_from_json(await request.body())
            if preprocess:
                prediction = await run_in_threadpool(recognizer.recognize_image, pixels, "pixels")
            else:
                prediction = await run_in_threadpool(recognizer.recognize_pixels, pixels)
        else:
            raise HTTPException(
                415,
                f"unsupported content type {content_type or '(none)'!r}: send multipart/form-data "
                "with a 'file' field, an image/png or image/jpeg body, or JSON {\"pixels\": ...}",
            )
        return prediction.to_json(top_k=3)

    @app.exception_handler(ImageError)
    async def image_error(_: Request, error: ImageError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    return app


async def _uploaded_file(request: Request) -> tuple[bytes, str]:
    try:
        form = await request.form(max_files=1, max_fields=10)
    except Exception as error:  # malformed multipart bodies raise several types
        raise HTTPException(400, f"malformed multipart body: {error}") from error
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise HTTPException(422, "multipart body needs a 'file' field holding the image")
    return await upload.read(), upload.filename or "upload"


def _from_image_bytes(recognizer: Recognizer, data: bytes, name: str):
    if not data:
        raise ImageError(f"{name}: empty body, expected a PNG or JPEG image")
    return recognizer.recognize_image(decode_image(data, name=name), name=name)


def _pixels_from_json(body: bytes) -> tuple[Any, bool]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise HTTPException(400, f"malformed JSON: {error}") from error
    if not isinstance(payload, dict) or "pixels" not in payload:
        raise HTTPException(422, "JSON body must be an object with a 'pixels' field")
    preprocess = payload.get("preprocess", False)
    if not isinstance(preprocess, bool):
        raise HTTPException(422, "'preprocess' must be true or false")
    return parse_pixel_array(payload["pixels"]), preprocess
