"""The page in a real browser: Debian's chromium driven by Playwright (never a downloaded browser) draws a
"1" with mouse events; the prediction, the 28x28 input, the feature maps and Grad-CAM appear; screenshots
at desktop and phone width go into the test's own folder."""

import shutil
import socket
import threading
import time

import httpx
import pytest

import cnnzoo
from cnnzoo.serve import ServeSettings, create_app

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs Debian's chromium (apt-get install chromium; scripts/install-system-deps.sh)",
)


@pytest.fixture(scope="module")
def server_url(lenet_source):
    """The app on uvicorn in a thread, on a free loopback port."""
    import uvicorn

    app = create_app({"lenet5-mnist": cnnzoo.load(lenet_source)}, ServeSettings())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server never became ready"
        time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def draw(page, points) -> None:
    """A stroke through `points` (fractions of the canvas), with mouse events."""
    box = page.locator("#canvas").bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=8)
    page.mouse.up()


def test_drawing_a_one_shows_the_prediction_and_what_the_layers_see(browser, server_url, tmp_path):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.set_default_timeout(60_000)  # generous: the machine may be busy with other tests
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.goto(server_url + "/")
    page.wait_for_function("document.querySelector('#model-label').textContent.includes('lenet5')")
    draw(page, [(0.52, 0.15), (0.50, 0.50), (0.48, 0.85)])  # a "1", top to bottom
    page.wait_for_function("document.querySelector('#prediction').textContent === '1'")
    page.wait_for_function("document.querySelectorAll('#layers img.fmap').length === 4")
    page.wait_for_function(
        "[...document.querySelectorAll('#layers img.fmap, #seen, #gradcam')].every(i => i.complete && i.naturalWidth > 0)"
    )
    captions = page.locator("#layers figcaption").all_inner_texts()
    assert captions == [
        "conv features.1 · 6×28×28",
        "pool features.3 · 6×14×14",
        "conv features.4 · 16×10×10",
        "pool features.6 · 16×5×5",
    ]
    assert page.locator("#bars .bar").count() == 5
    assert page.locator("#model").is_hidden()  # one model: no picker
    page.screenshot(path=str(tmp_path / "draw-a-one.png"), full_page=True)

    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(tmp_path / "draw-a-one-phone.png"), full_page=True)

    page.click("#clear")
    assert page.locator("#prediction").inner_text() == "–"
    assert errors == []
    page.close()
