"""The JSON API of `mnistlab serve`: good requests answer, bad ones get a 4xx naming the problem."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from mnistlab.serve.app import MAX_BODY_BYTES, MAX_JSON_BYTES, create_app


@pytest.fixture(scope="module")
def client() -> TestClient:
    with TestClient(create_app()) as test_client:
        yield test_client


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def drawn_like_a_person(digit28: np.ndarray) -> np.ndarray:
    """An MNIST digit as a person would draw it on a page: big, black on white."""
    big = Image.fromarray(255 - digit28).resize((280, 280), Image.Resampling.BILINEAR)
    return np.asarray(big)


def test_health_names_the_model(client):
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["model"].endswith(".safetensors")


def test_openapi_docs_are_served(client):
    assert client.get("/docs").status_code == 200
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]


def test_the_draw_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and '<canvas id="pad"' in page.text


def test_an_uploaded_png_is_recognized(client, mnist):
    _, (x_test, y_test) = mnist
    files = {"file": ("seven.png", png_bytes(drawn_like_a_person(x_test[0])), "image/png")}
    body = client.post("/api/predict", files=files).json()
    assert body["digit"] == int(y_test[0]) == 7
    assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-4
    assert np.asarray(body["image"]).shape == (28, 28)


def test_a_raw_jpeg_body_is_recognized(client, mnist):
    _, (x_test, y_test) = mnist
    buffer = io.BytesIO()
    Image.fromarray(drawn_like_a_person(x_test[1])).save(buffer, format="JPEG", quality=75)
    response = client.post(
        "/api/predict", content=buffer.getvalue(), headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 200 and response.json()["digit"] == int(y_test[1])


@pytest.mark.parametrize("shape", [(28, 28), (784,)])
def test_a_pixel_array_is_recognized_as_is(client, mnist, shape):
    _, (x_test, y_test) = mnist
    pixels = x_test[2].reshape(shape).tolist()
    body = client.post("/api/predict", json={"pixels": pixels}).json()
    assert body["digit"] == int(y_test[2])
    assert body["image"] == x_test[2].tolist()  # no preprocessing unless asked for


def detail(response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["detail"]


def test_wrong_content_type_is_415(client):
    message = detail(
        client.post("/api/predict", content=b"hi", headers={"content-type": "text/plain"}), 415
    )
    assert "text/plain" in message


def test_malformed_json_is_400(client):
    response = client.post(
        "/api/predict", content=b'{"pixels": [1, 2', headers={"content-type": "application/json"}
    )
    assert "malformed JSON" in detail(response, 400)


def test_json_without_pixels_is_422(client):
    assert "'pixels'" in detail(client.post("/api/predict", json={"image": []}), 422)


def test_wrong_array_size_is_422(client):
    message = detail(client.post("/api/predict", json={"pixels": [0] * 783}), 422)
    assert "28x28 or 784" in message and "[783]" in message


def test_values_out_of_range_are_422(client):
    pixels = [0] * 783 + [300]
    assert "0..255" in detail(client.post("/api/predict", json={"pixels": pixels}), 422)


def test_non_numbers_are_422(client):
    assert "numbers" in detail(client.post("/api/predict", json={"pixels": ["a"] * 784}), 422)


def test_a_non_image_file_is_422(client):
    files = {"file": ("notes.png", b"this is not an image", "image/png")}
    assert "not a readable image" in detail(client.post("/api/predict", files=files), 422)


def test_an_empty_canvas_is_422(client):
    files = {"file": ("blank.png", png_bytes(np.full((280, 280), 255, np.uint8)), "image/png")}
    assert "no ink" in detail(client.post("/api/predict", files=files), 422)


def test_multipart_without_a_file_field_is_422(client):
    assert "'file'" in detail(
        client.post("/api/predict", data={"x": "1"}, files={"y": ("a", b"1")}), 422
    )


def test_an_oversized_body_is_413_and_the_server_keeps_serving(client):
    response = client.post(
        "/api/predict",
        content=b"\0" * (MAX_BODY_BYTES + 1),
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 413 and "larger than" in response.json()["detail"]
    assert client.get("/api/health").status_code == 200


def test_errors_are_json(client):
    response = client.post(
        "/api/predict", content=b"x", headers={"content-type": "application/json"}
    )
    assert response.headers["content-type"].startswith("application/json")
    json.loads(response.text)


# ------------------------------------------------------------- edges (issue: bounded input)


def test_json_nested_10000_deep_is_a_400_json_error(client):
    """Before: RecursionError, 500 with a plain-text body."""
    for body in (b"[" * 10000 + b"]" * 10000, b'{"pixels": ' + b"[" * 10000 + b"]" * 10000 + b"}"):
        response = client.post(
            "/api/predict", content=body, headers={"content-type": "application/json"}
        )
        assert "nested too deeply" in detail(response, 400)


@pytest.mark.parametrize(
    ("value", "shown"), [("12", "the string '12'"), (True, "the boolean true"), (None, "null")]
)
def test_pixel_values_that_are_not_numbers_are_422_naming_the_field(client, value, shown):
    """Before: "12" and true were converted by np.asarray and answered 200."""
    pixels = [0] * 784
    pixels[5] = value
    message = detail(client.post("/api/predict", json={"pixels": pixels}), 422)
    assert message.startswith("pixels[5]:") and shown in message
    nested = [[0] * 28 for _ in range(28)]
    nested[3][4] = value
    assert "pixels[3][4]:" in detail(client.post("/api/predict", json={"pixels": nested}), 422)


def test_head_is_answered_like_get_without_a_body(client):
    """Before: 405 on HEAD / and HEAD /api/health."""
    for path in ("/", "/api/health"):
        response = client.head(path)
        assert response.status_code == 200 and response.content == b""
    assert client.head("/api/predict").status_code == 405  # POST only, as GET is


def test_the_body_limit_fits_phone_photos():
    assert MAX_BODY_BYTES >= 20 * 2**20  # 12 MP JPEGs run 3-12 MB; the old 8 MiB refused many


def test_a_json_body_over_its_limit_is_413(client):
    body = b'{"pixels": [' + b"0, " * (MAX_JSON_BYTES // 3) + b"0]}"
    response = client.post(
        "/api/predict", content=body, headers={"content-type": "application/json"}
    )
    assert "JSON body is larger than" in detail(response, 413)


def test_only_png_and_jpeg_are_decoded(client):
    buffer = io.BytesIO()
    Image.fromarray(drawn_like_a_person(np.zeros((28, 28), np.uint8))).save(buffer, format="GIF")
    files = {"file": ("d.gif", buffer.getvalue(), "image/gif")}
    assert "expected PNG or JPEG" in detail(client.post("/api/predict", files=files), 422)


def test_a_16_bit_photo_sized_png_is_recognized(client):
    """The finding's image: a small 16-bit 6300x6300 PNG (decoded at working size now)."""
    page = np.full((6300, 6300), 65535, np.uint16)
    page[1200:5100, 3000:3400] = 0  # a "1"
    files = {"file": ("one.png", png_bytes(page), "image/png")}
    assert len(files["file"][1]) < 1_000_000
    assert client.post("/api/predict", files=files).json()["digit"] == 1


def test_an_image_costing_more_than_the_decode_budget_is_422():
    with TestClient(create_app(decode_budget_bytes=64 * 2**20)) as small:
        page = np.full((4000, 4000, 3), 255, np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(page).save(buffer, format="JPEG", progressive=True)
        files = {"file": ("p.jpg", buffer.getvalue(), "image/jpeg")}
        message = detail(small.post("/api/predict", files=files), 422)
        assert "p.jpg: decoding this 4000x4000 JPEG image would take about" in message
        assert "more than the 64 MiB" in message


def test_an_unexpected_error_is_a_json_500(monkeypatch):
    from mnistlab.handwriting.recognizer import Recognizer

    def broken(self, pixels):
        raise RuntimeError("boom")

    monkeypatch.setattr(Recognizer, "recognize_pixels", broken)
    with TestClient(create_app(), raise_server_exceptions=False) as fragile:
        response = fragile.post("/api/predict", json={"pixels": [0] * 784})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error (RuntimeError)"}
