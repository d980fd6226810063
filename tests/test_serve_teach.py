"""Issue #20 over HTTP: POST /api/teach stores a correction under a profile, and
/api/predict reads with it; names, labels and limits are checked; profiles stay apart."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from mnistlab.handwriting.profiles import ProfileStore
from mnistlab.handwriting.recognizer import Recognizer
from mnistlab.serve.app import MAX_BODY_BYTES, MAX_JSON_BYTES, create_app


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "p.sqlite"


@pytest.fixture
def client(db: Path) -> TestClient:
    with TestClient(create_app(profiles_db=db)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def model() -> Recognizer:
    return Recognizer.from_path()


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def drawn_like_a_person(digit28: np.ndarray) -> np.ndarray:
    """An MNIST digit as a person would draw it on a page: big, black on white."""
    return np.asarray(Image.fromarray(255 - digit28).resize((280, 280), Image.Resampling.BILINEAR))


def detail(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail"}
    return body["detail"]


def a_wrong_label(digit: int) -> int:
    return (digit + 5) % 10


# ------------------------------------------------------------------------ teaching


def test_teaching_pixels_changes_the_answer_and_reports_the_count(client, db, mnist):
    _, (x_test, _) = mnist
    pixels = x_test[0].tolist()
    before = client.post("/api/predict", json={"pixels": pixels, "profile": "default"}).json()
    wrong = a_wrong_label(before["digit"])
    response = client.post(
        "/api/teach", json={"pixels": pixels, "preprocess": False, "label": wrong, "profile": "ann"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["digit"] == wrong and body["profile"] == "ann"
    assert body["taught"] == {"profile": "ann", "label": wrong, "examples": 1}
    assert {"probabilities", "top", "image"} <= set(body) and body["image"] == pixels
    assert abs(sum(body["probabilities"]) - 1) < 1e-4
    after = client.post("/api/predict", json={"pixels": pixels, "profile": "ann"}).json()
    assert after["digit"] == wrong and after["profile"] == "ann"
    assert client.post("/api/predict", json={"pixels": pixels}).json() == before  # default
    second = client.post(
        "/api/teach", json={"pixels": x_test[1].tolist(), "label": 3, "profile": "ann"}
    )
    assert second.json()["taught"]["examples"] == 2
    stored = ProfileStore(db).examples("ann")
    assert stored.labels.tolist() == [wrong, 3]
    assert np.array_equal(stored.images[0], x_test[0])


def test_teaching_an_uploaded_png_stores_the_image_the_model_saw(client, db, mnist):
    _, (x_test, y_test) = mnist
    upload = {"file": ("seven.png", png_bytes(drawn_like_a_person(x_test[0])), "image/png")}
    wrong = a_wrong_label(int(y_test[0]))
    response = client.post("/api/teach", files=upload, data={"label": str(wrong), "profile": "bo"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["digit"] == wrong and body["taught"] == {
        "profile": "bo",
        "label": wrong,
        "examples": 1,
    }
    stored = ProfileStore(db).examples("bo").images[0]
    assert stored.tolist() == body["image"]  # the 28x28 image, not the upload
    again = client.post("/api/predict", files=upload, data={"profile": "bo"}).json()
    assert again["digit"] == wrong and again["image"] == body["image"]
    assert client.post("/api/predict", files=upload).json()["digit"] == int(y_test[0])


def test_teaching_a_raw_image_body_takes_the_query(client, db, mnist):
    _, (x_test, y_test) = mnist
    wrong = a_wrong_label(int(y_test[1]))
    png = png_bytes(drawn_like_a_person(x_test[1]))
    response = client.post(
        f"/api/teach?profile=cy&label={wrong}", content=png, headers={"content-type": "image/png"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["taught"] == {"profile": "cy", "label": wrong, "examples": 1}
    again = client.post(
        "/api/predict?profile=cy", content=png, headers={"content-type": "image/png"}
    ).json()
    assert again["digit"] == wrong and again["profile"] == "cy"
    assert ProfileStore(db).info("cy").per_digit[wrong] == 1


def test_the_query_works_for_json_and_multipart_too(client, mnist):
    _, (x_test, _) = mnist
    pixels = x_test[2].tolist()
    body = client.post("/api/teach?profile=dee&label=4", json={"pixels": pixels}).json()
    assert body["taught"] == {"profile": "dee", "label": 4, "examples": 1}
    assert client.post("/api/predict?profile=dee", json={"pixels": pixels}).json()["digit"] == 4
    upload = {"file": ("d.png", png_bytes(drawn_like_a_person(x_test[2])), "image/png")}
    taught = client.post("/api/teach?profile=dee&label=6", files=upload).json()["taught"]
    assert taught == {"profile": "dee", "label": 6, "examples": 2}


def test_teaching_the_same_picture_again_keeps_one_copy_with_the_newest_label(client, mnist):
    _, (x_test, _) = mnist
    pixels = x_test[3].tolist()
    client.post("/api/teach", json={"pixels": pixels, "label": 1, "profile": "eve"})
    body = client.post("/api/teach", json={"pixels": pixels, "label": 2, "profile": "eve"}).json()
    assert body["digit"] == 2 and body["taught"]["examples"] == 1


def test_preprocess_true_stores_the_preprocessed_image(client, db, mnist):
    _, (x_test, _) = mnist
    page = drawn_like_a_person(x_test[4])  # 280x280, black on white
    body = client.post(
        "/api/teach",
        json={
            "pixels": np.asarray(Image.fromarray(page).resize((28, 28))).tolist(),
            "preprocess": True,
            "label": 0,
            "profile": "fay",
        },
    ).json()
    stored = ProfileStore(db).examples("fay").images[0]
    assert stored.tolist() == body["image"] and stored.mean() < 128  # white on black now


# ----------------------------------------------------------------- the default profile


def test_an_empty_default_profile_is_exactly_the_model(client, db, model, mnist):
    _, (x_test, _) = mnist
    for i in range(5):
        expected = model.recognize_pixels(x_test[i]).to_json(top_k=3)
        body = client.post("/api/predict", json={"pixels": x_test[i].tolist()}).json()
        assert body == {**expected, "profile": "default"}
    assert not db.exists()  # predicting never makes the database
    client.post("/api/teach", json={"pixels": x_test[9].tolist(), "label": 0, "profile": "gus"})
    assert db.exists()
    for i in range(5):  # a database with other profiles in it: still the model
        expected = model.recognize_pixels(x_test[i]).to_json(top_k=3)
        body = client.post("/api/predict?profile=default", json={"pixels": x_test[i].tolist()})
        assert body.json() == {**expected, "profile": "default"}


def test_teaching_the_default_profile_works_like_any_other(client, mnist):
    _, (x_test, _) = mnist
    pixels = x_test[5].tolist()
    before = client.post("/api/predict", json={"pixels": pixels}).json()["digit"]
    wrong = a_wrong_label(before)
    body = client.post("/api/teach", json={"pixels": pixels, "label": wrong}).json()
    assert body["taught"] == {"profile": "default", "label": wrong, "examples": 1}
    assert client.post("/api/predict", json={"pixels": pixels}).json()["digit"] == wrong


def test_one_profiles_examples_never_change_another_profiles_answers(client, mnist):
    _, (x_test, _) = mnist
    probe = x_test[:30]
    client.post("/api/teach", json={"pixels": x_test[100].tolist(), "label": 1, "profile": "hal"})

    def answers(profile: str) -> list[dict]:
        return [
            client.post("/api/predict", json={"pixels": x.tolist(), "profile": profile}).json()
            for x in probe
        ]

    hal, default = answers("hal"), answers("default")
    for i in range(10):  # teach "ivy" the probe digits themselves, all wrong
        wrong = a_wrong_label(default[i]["digit"])
        client.post(
            "/api/teach", json={"pixels": probe[i].tolist(), "label": wrong, "profile": "ivy"}
        )
    assert answers("hal") == hal and answers("default") == default
    ivy = answers("ivy")
    assert all(ivy[i]["digit"] == a_wrong_label(default[i]["digit"]) for i in range(10))


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("label", [10, -1, "x", True, False, "12", 3.0, None, [3]])
def test_a_bad_json_label_is_422_saying_what_is_allowed(client, db, label):
    response = client.post("/api/teach", json={"pixels": [0] * 784, "label": label})
    assert "digit 0..9" in detail(response, 422)
    assert not db.exists()


@pytest.mark.parametrize("label", ["10", "-1", "x", "true", "", "12", "3.0"])
def test_a_bad_form_or_query_label_is_422(client, label, mnist):
    _, (x_test, _) = mnist
    upload = {"file": ("d.png", png_bytes(drawn_like_a_person(x_test[0])), "image/png")}
    assert "digit 0..9" in detail(
        client.post("/api/teach", files=upload, data={"label": label}), 422
    )
    response = client.post("/api/teach", params={"label": label}, json={"pixels": [0] * 784})
    assert "digit 0..9" in detail(response, 422)


def test_a_missing_label_is_422(client, db):
    message = detail(client.post("/api/teach", json={"pixels": [0] * 784}), 422)
    assert "label: missing" in message and "0..9" in message
    assert not db.exists()


def test_a_label_given_twice_differently_is_422(client):
    response = client.post("/api/teach?label=3", json={"pixels": [0] * 784, "label": 4})
    assert "given 2 times" in detail(response, 422)


@pytest.mark.parametrize("name", ["../x", "", "a" * 65, "-x", "a b", "ü", 7, None, True])
def test_a_bad_profile_name_is_422_on_predict_and_teach(client, db, name):
    for route in ("/api/predict", "/api/teach"):
        response = client.post(route, json={"pixels": [0] * 784, "label": 1, "profile": name})
        assert "not a valid profile name" in detail(response, 422)
    if isinstance(name, str):
        response = client.post("/api/predict", params={"profile": name}, json={"pixels": [0] * 784})
        assert "not a valid profile name" in detail(response, 422)
        upload = {"file": ("d.png", png_bytes(np.zeros((28, 28), np.uint8)), "image/png")}
        response = client.post("/api/teach", files=upload, data={"label": "1", "profile": name})
        assert "not a valid profile name" in detail(response, 422)
    assert not db.exists()


def test_an_unknown_profile_is_404_on_predict(client, mnist):
    _, (x_test, _) = mnist
    message = detail(client.post("/api/predict?profile=zed", json={"pixels": [0] * 784}), 404)
    assert "'zed' has not been taught yet" in message and "/api/teach" in message
    upload = {"file": ("d.png", png_bytes(drawn_like_a_person(x_test[0])), "image/png")}
    assert detail(client.post("/api/predict", files=upload, data={"profile": "zed"}), 404)
    client.post("/api/teach", json={"pixels": [0] * 784, "label": 0, "profile": "other"})
    assert detail(client.post("/api/predict?profile=zed", json={"pixels": [0] * 784}), 404)
    taught = client.post("/api/teach?profile=zed&label=0", json={"pixels": [0] * 784})
    assert taught.status_code == 200  # teaching creates it
    assert client.post("/api/predict?profile=zed", json={"pixels": [0] * 784}).status_code == 200


def test_too_many_profiles_is_409(db):
    app = create_app(profiles_db=db)
    app.state.personal.store.max_profiles = 2
    with TestClient(app) as small:
        for name in ("one", "two"):
            body = {"pixels": [0] * 784, "label": 1, "profile": name}
            assert small.post("/api/teach", json=body).status_code == 200
        body = {"pixels": [0] * 784, "label": 1, "profile": "three"}
        assert "forget one" in detail(small.post("/api/teach", json=body), 409)
        body["profile"] = "two"  # existing profiles still learn
        assert small.post("/api/teach", json=body).status_code == 200
    assert [p.name for p in ProfileStore(db).list()] == ["one", "two"]


def test_teach_keeps_predicts_input_errors_and_body_limits(client, db):
    assert "'pixels'" in detail(client.post("/api/teach", json={"label": 1}), 422)
    assert "0..255" in detail(client.post("/api/teach?label=1", json={"pixels": [300] * 784}), 422)
    assert "'file'" in detail(
        client.post("/api/teach", data={"label": "1"}, files={"y": ("a", b"1")}), 422
    )
    blank = {"file": ("b.png", png_bytes(np.full((280, 280), 255, np.uint8)), "image/png")}
    assert "no ink" in detail(client.post("/api/teach?label=1", files=blank), 422)
    response = client.post("/api/teach", content=b"hi", headers={"content-type": "text/plain"})
    assert "text/plain" in detail(response, 415)
    response = client.post(
        "/api/teach?label=1",
        content=b"\0" * (MAX_BODY_BYTES + 1),
        headers={"content-type": "image/png"},
    )
    assert "larger than" in detail(response, 413)
    big = b'{"label": 1, "pixels": [' + b"0, " * (MAX_JSON_BYTES // 3) + b"0]}"
    response = client.post("/api/teach", content=big, headers={"content-type": "application/json"})
    assert "JSON body is larger than" in detail(response, 413)
    assert not db.exists()


def test_both_routes_are_documented(client):
    paths = client.get("/openapi.json").json()["paths"]
    teach = paths["/api/teach"]["post"]
    json_schema = teach["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"pixels", "label", "profile"} <= set(json_schema)
    assert {p["name"] for p in teach["parameters"]} == {"label", "profile"}
    assert {p["name"] for p in paths["/api/predict"]["post"]["parameters"]} == {"profile"}


# ----------------------------------------------------------- two processes, one file

TEACHER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from fastapi.testclient import TestClient
    from mnistlab.serve.app import create_app

    db, seed = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(seed)
    with TestClient(create_app(profiles_db=db)) as client:
        print("ready", flush=True)
        sys.stdin.readline()  # both start teaching together
        counts = []
        for i in range(20):
            pixels = rng.integers(0, 256, (28, 28)).tolist()
            for profile in ("shared", f"own{seed}"):
                body = {"pixels": pixels, "label": i % 10, "profile": profile}
                response = client.post("/api/teach", json=body)
                assert response.status_code == 200, response.text
            counts.append(response.json()["taught"]["examples"])
        assert counts == list(range(1, 21)), counts
    print("done", flush=True)
    """
)


def test_two_processes_teaching_one_database_at_once_lose_nothing(db):
    teachers = [
        subprocess.Popen(
            [sys.executable, "-c", TEACHER, str(db), str(seed)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    try:
        for teacher in teachers:
            assert teacher.stdout.readline().strip() == "ready", teacher.stderr.read()
        for teacher in teachers:
            teacher.stdin.write("go\n")
            teacher.stdin.flush()
        for teacher in teachers:
            out, err = teacher.communicate(timeout=120)
            assert teacher.returncode == 0 and out.strip() == "done", err[-3000:]
    finally:
        for teacher in teachers:
            if teacher.poll() is None:
                teacher.kill()
                teacher.wait()
    store = ProfileStore(db)
    assert store.info("shared").examples == 40
    assert store.info("own1").examples == store.info("own2").examples == 20
    assert sorted(p.name for p in store.list()) == ["own1", "own2", "shared"]
    app = create_app(profiles_db=db)  # a third reader sees them all
    with TestClient(app) as client:
        body = {"pixels": [0] * 784, "profile": "shared"}
        assert client.post("/api/predict", json=body).status_code == 200
    assert len(app.state.personal.memory("shared")) == 40
