"""`mala serve`: an HTTP service (FastAPI + uvicorn) around a `Predictor`, and a web page to try it.

POST /predict takes one image, as a multipart upload (any field name) or as the raw request body, and answers with
JSON (score, decision, map and overlay as base64 PNG) or, with `?output=map|overlay`, the PNG itself (score and
decision in X-Mala-* headers). Uploads over the size limit get 413 before they are read whole; files that are no
image, or whose header promises more pixels than the limit (decompression bombs), get 413/415 before decoding.
One inference runs at a time: each already uses every core, so parallel ones would only queue inside torch.
"""

from __future__ import annotations

import base64
import io
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mala.data.images import to_8bit_rgb
from mala.deploy.predict import Prediction, Predictor
from mala.deploy.render import map_image, overlay, png_bytes
from mala.sizes import stored_size

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_MEGAPIXELS = 40.0
OUTPUTS = ("json", "map", "overlay")


class UploadLimit:
    """ASGI middleware: 413 for a body over `max_bytes`, by its declared length or while it streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(413, f"upload larger than the limit of {self.max_bytes / 1e6:g} MB")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": self._too_large().detail}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self._too_large()  # raised inside the endpoint, so FastAPI answers it as a 413
            return message

        await self.app(scope, counted, send)


def decode_upload(data: bytes, max_pixels: int) -> Image.Image:
    """The uploaded bytes as an 8-bit RGB image; 4xx with the reason for anything else."""
    if not data:
        raise HTTPException(400, "empty upload: send one image file")
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError):
        raise HTTPException(415, "not an image that can be read (PNG, JPEG, BMP, TIFF or WebP)") from None
    width, height = image.size
    if width * height > max_pixels:
        raise HTTPException(413, f"image of {width}x{height} pixels is over the limit of {max_pixels / 1e6:g} "
                                 "megapixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            return to_8bit_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise HTTPException(415, f"image cannot be decoded ({exc.__class__.__name__}: {exc})") from None


async def upload_bytes(request: Request) -> bytes:
    """The first file of a multipart form, or the raw body."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=8)
        uploads = [value for value in form.values() if isinstance(value, UploadFile)]
        if not uploads:
            raise HTTPException(400, "the form holds no file: upload the image as a file field")
        return await uploads[0].read()
    return await request.body()


def _as_json(prediction: Prediction, image: Image.Image, pictures: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "score": prediction.score,
        "normalized_score": prediction.normalized_score,
        "decision": prediction.decision,
        "category": prediction.category,
        "anomalous_area": prediction.anomalous_area,
        "width": image.width,
        "height": image.height,
    }
    if pictures:
        payload["map_png"] = base64.b64encode(png_bytes(map_image(prediction.anomaly_map))).decode()
        payload["overlay_png"] = base64.b64encode(png_bytes(overlay(np.asarray(image), prediction.anomaly_map))).decode()
    return payload


def create_app(predictor: Predictor, model_name: str, max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1e6),
               max_pixels: int = int(DEFAULT_MAX_MEGAPIXELS * 1e6)) -> FastAPI:
    app = FastAPI(title="mala", description="Anomaly score, decision and map for one image per request")
    app.add_middleware(UploadLimit, max_bytes=max_upload_bytes)
    one_at_a_time = threading.Lock()
    description = predictor.backend.description

    def run(image: Image.Image) -> Prediction:
        with one_at_a_time:
            return predictor([image])[0]

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, "backend": predictor.backend.kind,
                "image_size": stored_size(predictor.backend.image_shape), "tiling": description.get("tiling"),
                "calibrated": predictor.calibrated, "categories": description.get("categories", [])}

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return resources.files("mala.deploy").joinpath("page.html").read_text()

    @app.post("/predict")
    async def predict(request: Request, output: str = "json", pictures: bool = True) -> Response:
        if output not in OUTPUTS:
            raise HTTPException(400, f"output must be one of {', '.join(OUTPUTS)}, not '{output}'")
        started = time.perf_counter()
        image = decode_upload(await upload_bytes(request), max_pixels)
        prediction = await run_in_threadpool(run, image)
        if output == "json":
            payload = _as_json(prediction, image, pictures)
            payload["milliseconds"] = round(1000 * (time.perf_counter() - started), 1)
            return JSONResponse(payload)
        if output == "map":
            picture = map_image(prediction.anomaly_map)
        else:
            picture = Image.fromarray(overlay(np.asarray(image), prediction.anomaly_map))
        headers = {"X-Mala-Score": f"{prediction.normalized_score:.6f}", "X-Mala-Decision": prediction.decision}
        if prediction.category is not None:
            headers["X-Mala-Category"] = prediction.category
        return Response(png_bytes(picture), media_type="image/png", headers=headers)

    return app


def serve(model: str, host: str, port: int, category: str | None = None, device: str = "cpu",
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
          memory_search: str | None = None) -> None:
    import uvicorn

    from mala.deploy.backends import open_backend

    predictor = Predictor(open_backend(model, device, category=category, memory_search=memory_search), category)
    app = create_app(predictor, str(model), int(max_upload_mb * 1e6), int(max_megapixels * 1e6))
    uvicorn.run(app, host=host, port=port, log_level="info")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_server(model: Path, *options: str, start_timeout: float = 120.0) -> Iterator[str]:
    """`mala serve` in a child process on a free loopback port, for tests and benchmarks: waits for /health,
    yields the URL, stops the server."""
    port = free_port()
    log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a full pipe would stall the server
    process = subprocess.Popen([sys.executable, "-m", "mala.cli", "serve", "--model", str(model), "--port", str(port),
                                *options], stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while not _answers(url):
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"mala serve exited with {process.returncode}:\n{log.read()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"mala serve did not answer on {url} within {start_timeout} s")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
