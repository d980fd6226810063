"""The JSON API of `mnistlab serve`: good requests answer, bad ones get a 4xx naming the problem."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from mnistlab.serve.app import MAX_BODY_BYTES, create_app


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
