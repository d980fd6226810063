"""The real server against clients that misbehave: each test is one finding's reproduction.

Runs uvicorn in a subprocess on 127.0.0.1 with the limits `mnistlab serve` uses, except
shorter deadlines (1 s for headers, 1 s grace for bodies) so the slow-client tests take
seconds. Bounded: loopback only, at most 50 connections, well under 30 s in all.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import httpx

from mnistlab.serve.limits import DRAIN_BYTES, MAX_BODY_BYTES
from serve_process import digit_drawing, encoded, running_server

LAUNCHER = (
    "from mnistlab.serve.app import create_app, run_server; "
    "run_server(create_app(body_grace_s=1.0), port={port}, header_timeout_s=1.0, "
    "keep_alive_s=1.0)"
)


@pytest.fixture(scope="module")
def server():
    with running_server(launcher=LAUNCHER) as (url, process):
        yield url, process.args


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def test_urllib_sending_an_oversized_body_whole_gets_the_413_not_a_reset(server):
    """urllib writes the whole body before it reads: the server must read it (up to
    DRAIN_BYTES) before answering. Before: ConnectionResetError (errno 104)."""
    url, _ = server
    body = b"\0" * (MAX_BODY_BYTES + 1024 * 1024)
    assert len(body) <= DRAIN_BYTES
    request = urllib.request.Request(
        f"{url}/api/predict", data=body, headers={"content-type": "image/png"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert b"larger than" in refused.value.read()


def test_a_chunked_multipart_upload_over_the_limit_is_413(server):
    """No Content-Length, so the limit trips inside the multipart parser. Before: 400
    "malformed multipart body"."""
    url, _ = server

    def chunks():
        yield (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n"
        )
        for _ in range(MAX_BODY_BYTES // 2**20 + 2):
            yield b"\0" * 2**20
        yield b"\r\n--b--\r\n"

    response = httpx.post(
        f"{url}/api/predict",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=b"},
        timeout=30,
    )
    assert response.status_code == 413, response.text
    assert "larger than" in response.json()["detail"]


def test_expect_100_continue_gets_the_413_before_sending_the_body(server):
    url, _ = server
    with socket.create_connection(host_port(url), timeout=10) as conn:
        conn.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1)
        )
        assert conn.recv(200).startswith(b"HTTP/1.1 413")


def read_until_closed(conn: socket.socket) -> bytes:
    data = b""
    while chunk := conn.recv(4096):
        data += chunk
    return data


def test_50_slow_connections_are_closed_by_the_deadlines_and_health_answers(server):
    """Half send part of the headers, half the headers and part of the body, then stall.
    Before: all 50 were held open forever (30 s and counting)."""
    url, _ = server
    connections = []
    try:
        for i in range(50):
            conn = socket.create_connection(host_port(url), timeout=15)
            if i % 2:
                conn.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            else:
                conn.sendall(
                    b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                    b"Content-Length: 100000\r\n\r\n\x89PNG"
                )
            connections.append(conn)
        assert httpx.get(f"{url}/api/health", timeout=10).status_code == 200
        start = time.monotonic()
        answers = [read_until_closed(conn) for conn in connections]
        waited = time.monotonic() - start
    finally:
        for conn in connections:
            conn.close()
    assert waited < 10, f"slow connections were held {waited:.1f} s"
    headers_stalled, body_stalled = answers[1::2], answers[0::2]
    assert all(answer == b"" for answer in headers_stalled)  # closed: no request to answer
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in body_stalled), body_stalled[0]
    assert all(b"did not arrive in time" in answer for answer in body_stalled)
    assert httpx.get(f"{url}/api/health", timeout=10).status_code == 200


def test_an_idle_keep_alive_connection_is_closed(server):
    url, _ = server
    with socket.create_connection(host_port(url), timeout=10) as conn:
        conn.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        start = time.monotonic()
        answer = read_until_closed(conn)
        assert answer.startswith(b"HTTP/1.1 200") and time.monotonic() - start < 5


def test_a_byte_after_a_response_does_not_hold_the_connection(server):
    """uvicorn cancels its keep-alive timer on any data; the header deadline still holds."""
    url, _ = server
    with socket.create_connection(host_port(url), timeout=10) as conn:
        conn.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\nG")
        start = time.monotonic()
        answer = read_until_closed(conn)
        assert answer.startswith(b"HTTP/1.1 200") and time.monotonic() - start < 5


def test_head_answers_like_get_over_real_http(server):
    url, _ = server
    for path in ("/", "/api/health"):
        response = httpx.head(f"{url}{path}", timeout=10)
        assert response.status_code == 200 and response.content == b""
        assert int(response.headers["content-length"]) > 0


def test_it_still_recognizes_a_drawing_after_all_that(server):
    url, _ = server
    files = {"file": ("one.png", encoded(digit_drawing(), "PNG"), "image/png")}
    response = httpx.post(f"{url}/api/predict", files=files, timeout=30)
    assert response.status_code == 200 and response.json()["digit"] == 1


@pytest.mark.parametrize(
    ("content_type", "size", "status"),
    [("application/json", 2 * 2**20, 413), ("text/plain", 5 * 2**20, 415)],
)
def test_an_early_answer_waits_for_the_body_so_urllib_reads_it(server, content_type, size, status):
    """The app answers before reading the whole body (JSON over its own limit, a type it
    does not take); the rest is drained first, or urllib would get a reset."""
    url, _ = server
    request = urllib.request.Request(
        f"{url}/api/predict", data=b" " * size, headers={"content-type": content_type}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == status
