"""A real browser draws a digit on the page, stroke by stroke, reads the answer, and
corrects it with the "Wrong? It was:" buttons."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
playwright_api = pytest.importorskip("playwright.sync_api")
import uvicorn  # noqa: E402

from mnistlab.handwriting.profiles import ProfileStore  # noqa: E402
from mnistlab.serve.app import create_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)"),
]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def profiles_db(tmp_path_factory) -> Path:
    """The server's profiles database: a temporary one, never the user's."""
    return tmp_path_factory.mktemp("profiles") / "profiles.sqlite"


@pytest.fixture(scope="module")
def server_url(profiles_db):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(profiles_db=profiles_db)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


# Strokes in canvas coordinates (280x280), drawn as a person would.
STROKES = {
    "1": [[(150, 40), (150, 240)]],
    "7": [[(70, 50), (210, 50), (120, 240)]],
    "0": [
        [
            (140, 40),
            (200, 80),
            (210, 140),
            (195, 210),
            (140, 245),
            (85, 210),
            (70, 140),
            (80, 80),
            (140, 40),
        ]
    ],
}


def draw(page, strokes) -> None:
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x, box["y"] + y)
        page.mouse.down()
        for (x0, y0), (x1, y1) in itertools.pairwise(stroke):
            for step in range(1, 9):  # several moves per segment, like a real hand
                t = step / 8
                page.mouse.move(box["x"] + x0 + (x1 - x0) * t, box["y"] + y0 + (y1 - y0) * t)
        page.mouse.up()


def artifacts_dir(tmp_path: Path) -> Path:
    configured = os.environ.get("MNISTLAB_TEST_ARTIFACTS")
    directory = Path(configured) if configured else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_drawing_digits_shows_the_recognized_digit(server_url, tmp_path):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 640})
            page.goto(server_url)
            for digit, strokes in STROKES.items():
                page.click("#clear")
                draw(page, strokes)
                playwright_api.expect(page.locator("#digit")).to_have_text(digit, timeout=10_000)
                page.wait_for_timeout(300)  # let the bars finish their transition
                page.screenshot(path=str(artifacts_dir(tmp_path) / f"draw-{digit}.png"))
            bars = page.locator(".bar")
            assert bars.count() == 10
            assert "best" in (bars.nth(0).get_attribute("class") or "")
        finally:
            browser.close()


def test_tapping_the_right_digit_teaches_the_profile(server_url, profiles_db, tmp_path):
    """A correction: draw a 1, say it was a 7; the answer turns to 7 at once, and the same
    drawing reads as 7 again with that profile (a fresh name, so "default" stays empty)."""
    expect = playwright_api.expect
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 760})
            page.goto(server_url)
            seven = page.get_by_role("button", name="It was a 7: teach this drawing as 7")
            expect(seven).to_be_disabled()  # nothing to teach before an answer
            page.get_by_label("Profile").fill("browser-test")
            page.get_by_label("Profile").blur()  # 'change' fires: the name is stored
            page.click("#clear")
            draw(page, STROKES["1"])
            expect(page.locator("#digit")).to_have_text("1", timeout=10_000)
            expect(page.locator("#note")).to_contain_text("browser-test is new")  # its 404
            seven.click()
            expect(page.locator("#digit")).to_have_text("7", timeout=10_000)
            expect(page.locator("#note")).to_have_text(
                "Taught 7: now 1 example in profile browser-test."
            )
            page.wait_for_timeout(300)
            page.screenshot(path=str(artifacts_dir(tmp_path) / "taught-7.png"))
            page.click("#clear")
            draw(page, STROKES["1"])  # the same strokes: the same 28x28 image
            expect(page.locator("#digit")).to_have_text("7", timeout=10_000)
            assert page.evaluate("localStorage.getItem('mnistlab.profile')") == "browser-test"
            page.reload()  # the name is remembered
            expect(page.get_by_label("Profile")).to_have_value("browser-test")
        finally:
            browser.close()
    assert ProfileStore(profiles_db).info("browser-test").per_digit[7] == 1
