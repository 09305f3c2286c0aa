"""`mala serve` over real HTTP on 127.0.0.1: answers, refusals with reasons, and a bounded load."""

from __future__ import annotations

import base64
import io
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared_data
from mala.deploy.serve import running_server

MAX_UPLOAD_MB = 1
MAX_MEGAPIXELS = 4


@pytest.fixture(scope="module")
def url(onnx_model):
    with running_server(onnx_model, "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-megapixels",
                        str(MAX_MEGAPIXELS)) as address:
        yield address


@pytest.fixture(scope="module")
def image_bytes() -> bytes:
    path = sorted(shared_data("metal_plate", "test", "defect").glob("*.png"))[0]
    return path.read_bytes()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_health_describes_the_model(url, onnx_model):
    health = httpx.get(f"{url}/health").json()
    assert health == {"status": "ok", "model": str(onnx_model), "backend": "onnxruntime", "image_size": 64,
                      "tiling": None, "calibrated": False, "categories": ["metal_plate", "magnetic_tile"]}


def test_multipart_upload_gets_score_and_pictures_at_the_image_size(url, image_bytes):
    answer = httpx.post(f"{url}/predict", files={"file": ("part.png", image_bytes, "image/png")}, timeout=60)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    size = Image.open(io.BytesIO(image_bytes)).size
    assert (result["width"], result["height"]) == size
    assert result["decision"] == "no threshold" and 0 <= result["score"] <= 1
    assert result["category"] is None  # a pixel ViT of two categories has no memory to route with
    for key in ("map_png", "overlay_png"):
        assert Image.open(io.BytesIO(base64.b64decode(result[key]))).size == size


def test_raw_body_and_png_output(url, image_bytes):
    answer = httpx.post(f"{url}/predict?output=map", content=image_bytes, timeout=60)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert float(answer.headers["x-mala-score"]) == pytest.approx(
        httpx.post(f"{url}/predict?pictures=false", content=image_bytes, timeout=60).json()["normalized_score"], abs=1e-5)
    assert Image.open(io.BytesIO(answer.content)).mode == "L"


@pytest.mark.parametrize("body, status, message", [
    (b"", 400, "empty upload"),
    (b"%PDF-1.4 not an image at all", 415, "not an image"),
    (b"\x89PNG\r\n\x1a\n" + bytes(100), 415, "not an image"),
])
def test_bad_uploads_get_4xx_with_a_reason(url, body, status, message):
    answer = httpx.post(f"{url}/predict", content=body, timeout=60)
    assert answer.status_code == status and message in answer.json()["detail"]


def test_decompression_bomb_is_refused_before_decoding(url):
    bomb = png(Image.new("1", (4000, 3000)))  # 12 megapixels in a few kilobytes
    assert len(bomb) < 100_000
    answer = httpx.post(f"{url}/predict", files={"file": ("bomb.png", bomb, "image/png")}, timeout=60)
    assert answer.status_code == 413 and "4000x3000 pixels is over the limit" in answer.json()["detail"]


def test_uploads_over_the_size_limit_are_refused(url):
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    big = png(Image.fromarray(noise))  # incompressible: about 1.5 MB
    assert len(big) > MAX_UPLOAD_MB * 1e6
    answer = httpx.post(f"{url}/predict", content=big, timeout=60)
    assert answer.status_code == 413 and "larger than the limit" in answer.json()["detail"]

    def chunks():  # no Content-Length: the limit holds while the body streams in
        for start in range(0, len(big), 65536):
            yield big[start:start + 65536]

    answer = httpx.post(f"{url}/predict", content=chunks(), timeout=60)
    assert answer.status_code == 413


def test_wrong_output_and_empty_form_are_explained(url, image_bytes):
    answer = httpx.post(f"{url}/predict?output=jpeg", content=image_bytes, timeout=60)
    assert answer.status_code == 400 and "output must be one of" in answer.json()["detail"]
    answer = httpx.post(f"{url}/predict", data={"note": "no file"}, files={"x": ("", b"", "")}, timeout=60)
    assert answer.status_code in (400, 415)


def test_bounded_load_has_no_failures(url, image_bytes):
    """8 concurrent clients, 200 requests in all; the latencies go to the test output (BENCHMARKS.md has the bench)."""
    def client(requests: int) -> list[tuple[int, float]]:
        with httpx.Client(timeout=120) as session:
            results = []
            for _ in range(requests):
                started = time.perf_counter()
                status = session.post(f"{url}/predict?pictures=false", content=image_bytes).status_code
                results.append((status, time.perf_counter() - started))
            return results

    with ThreadPoolExecutor(8) as pool:
        results = [r for batch in pool.map(client, [25] * 8) for r in batch]
    statuses = [status for status, _ in results]
    assert len(results) == 200 and statuses.count(200) == 200, statuses
    latencies = sorted(seconds for _, seconds in results)
    print(f"load: p50 {1000 * statistics.median(latencies):.0f} ms, p99 {1000 * latencies[197]:.0f} ms")
    assert httpx.get(f"{url}/health").status_code == 200
